"""The ``multiverify`` command: the demo, policy checks, audit-trail tools and backtests.

The command needs the ``cli`` extra (click and rich). This module imports
without them, so that [`main`][] can say what to install; the commands
themselves are built by [`create_cli`][] once the extras are known to be there.
It is the only module that draws on the screen.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from ._audit import AuditEvent, AuditTrail
from ._results import Outcome, ResultStatus, Verdict
from ._session import Session, SessionStatus, StepState
from ._specs import BUILTIN_CHANNELS, ChannelSpec
from ._verifier import Verifier
from .channels import Channel
from .exceptions import AuditIntegrityError, ConfigurationError, PolicyError
from .policy import Policy, explain_policy, load_policy
from .sandbox import (
    PERSONAS,
    Persona,
    SandboxSms,
    SandboxVideoVendor,
    channel_label,
    get_persona,
    load_default_policy,
    play,
    sandbox_bureau_channel,
    sandbox_phone_channel,
    simulated_channels,
)
from .stores import SqliteStore

try:
    import click
    from rich.console import Console, Group
    from rich.live import Live
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _EXTRAS = False
else:
    _EXTRAS = True

__all__ = ["create_cli", "main", "verdict_json"]

_HINT = (
    "multiverify: the command line needs the 'cli' extra: "
    "pip install 'multiverify[cli]'\n"
)

_OUTCOME_STYLE = {
    Outcome.APPROVED: "bold green",
    Outcome.REJECTED: "bold red",
    Outcome.REVIEW: "bold yellow",
    Outcome.EXPIRED: "bold magenta",
}
_STATE_STYLE = {
    StepState.PENDING: "dim",
    StepState.SKIPPED: "dim",
    StepState.RUNNING: "cyan",
    StepState.WAITING: "yellow",
    StepState.DONE: "",
    StepState.CANCELLED: "dim",
}
_STATUS_STYLE = {
    ResultStatus.PASSED: "green",
    ResultStatus.FAILED: "red",
    ResultStatus.INCONCLUSIVE: "yellow",
    ResultStatus.ERROR: "red",
    ResultStatus.TIMEOUT: "magenta",
    ResultStatus.CANCELLED: "dim",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``multiverify`` command (the console-script entry point).

    Exits 2 with a one-line hint when the ``cli`` extra is not installed.
    """
    if not _EXTRAS:  # pragma: no cover - exercised in a subprocess by the tests
        sys.stderr.write(_HINT)
        raise SystemExit(2)
    create_cli()(args=argv, prog_name="multiverify")


# --- plain helpers ----------------------------------------------------------------


def verdict_json(session: Session) -> dict[str, Any]:
    """The session's verdict as the JSON ``multiverify demo --json`` prints."""
    verdict = session.verdict
    if verdict is None:
        return {
            "session_id": session.session_id,
            "outcome": None,
            "status": session.status.value,
        }
    return {
        "session_id": session.session_id,
        "outcome": verdict.outcome.value,
        "reasons": [
            {"code": reason.code, "message": reason.message}
            for reason in verdict.reasons
        ],
        "score": verdict.score,
        "decided_by": verdict.decided_by,
        "policy": {
            "name": verdict.policy.name,
            "version": verdict.policy.version,
            "hash": verdict.policy.hash,
        },
        "steps": [
            {
                "step_id": step.step_id,
                "channel": step.channel,
                "state": step.state,
                "status": step.result.status.value if step.result else None,
                "signals": list(step.result.signal_names) if step.result else [],
                "score": step.result.score if step.result else None,
            }
            for step in verdict.steps
        ],
    }


def _problem_lines(error: PolicyError, file: str) -> list[str]:
    if not error.problems:
        return [f"{file}: {error.message}"]
    return [
        f"{problem.source or file}: {problem.path}: {problem.message}"
        for problem in error.problems
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# --- the demo ---------------------------------------------------------------------


def _steps_table(
    session: Session, policy: Policy, labels: dict[str, str | None]
) -> Table:
    table = Table(
        title=f"Session {session.session_id}", title_justify="left", expand=False
    )
    for header in ("step", "channel", "state", "result", "signals", "score"):
        table.add_column(header)
    for record in session.steps:
        channel = policy.step(record.step_id).channel
        label = Text(channel)
        if labels.get(channel):
            label.append(f" ({labels[channel]})", style="dim italic")
        state = Text(record.state.value, style=_STATE_STYLE[record.state])
        if record.state is StepState.WAITING and record.challenge is not None:
            challenge = record.challenge
            where = challenge.destination or challenge.url or ""
            state.append(
                f"\n{challenge.kind}" + (f" → {where}" if where else ""), style="dim"
            )
        result = record.result
        table.add_row(
            record.step_id,
            label,
            state,
            Text(result.status.value, style=_STATUS_STYLE[result.status])
            if result
            else Text(""),
            Text(", ".join(result.signal_names)) if result else Text(""),
            Text(f"{result.score:.2f}")
            if result and result.score is not None
            else Text(""),
        )
    return table


def _header(persona: Persona, policy: Policy, store: str) -> Text:
    loan = persona.applicant.loan
    text = Text()
    text.append("multiverify demo", style="bold")
    text.append(f" — persona {persona.name}: {persona.summary}\n")
    text.append(
        f"applicant {persona.applicant.applicant_id}: loan of {loan.amount} "
        f"{loan.currency} over {loan.term_months} months ({loan.purpose})\n"
        f"policy {policy.name} {policy.version} (sha256 {policy.hash[:12]}); "
        f"store {store}",
        style="dim",
    )
    return text


def _verdict_panel(verdict: Verdict) -> Panel:
    body = Text()
    body.append(verdict.outcome.value.upper(), style=_OUTCOME_STYLE[verdict.outcome])
    if verdict.score is not None:
        body.append(f"  score {verdict.score:.2f}")
    body.append("\n\n")
    for reason in verdict.reasons:
        body.append(reason.code, style="bold")
        body.append(f"  {reason.message}\n" if reason.message else "\n")
    body.append("\n")
    body.append(verdict.explain())
    return Panel(
        body,
        title="Verdict",
        title_align="left",
        border_style=_OUTCOME_STYLE[verdict.outcome].removeprefix("bold "),
    )


async def _run_demo(
    persona: Persona,
    policy: Policy,
    db: Path,
    *,
    speed: float,
    live: Live | None,
    header: Text | None,
) -> Session:
    sms = SandboxSms()
    video = SandboxVideoVendor(persona=persona.video_persona, speed=speed)
    # Every step runs the real channel on a sandbox vendor.
    real: dict[str, Channel] = {
        "credit_bureau": sandbox_bureau_channel(persona),
        "phone_call": sandbox_phone_channel(persona, speed=speed),
        "sms_code": sms.channel(),
        "video_sign": video.channel(),
    }
    channels = [
        real.get(channel.spec.name, channel)
        for channel in simulated_channels(persona, speed=speed)
    ]
    labels = {channel.spec.name: channel_label(channel) for channel in channels}

    async def progress(session: Session) -> None:
        if live is not None:
            table = _steps_table(session, policy, labels)
            live.update(Group(header, table) if header is not None else table)

    async with (
        video,
        Verifier(policy, channels=channels, store=SqliteStore(db)) as verifier,
    ):
        video.connect(verifier)
        return await play(
            verifier, persona, speed=speed, on_progress=progress, video=video, sms=sms
        )


def _demo(
    persona: Persona,
    policy_file: Path | None,
    *,
    as_json: bool,
    db: Path | None,
    speed: float,
) -> None:
    try:
        policy = (
            load_default_policy() if policy_file is None else load_policy(policy_file)
        )
    except PolicyError as exc:
        _fail_policy(exc, str(policy_file))
    if db is not None and not db.parent.is_dir():
        raise click.BadParameter(
            f"no directory {db.parent} to keep the session in", param_hint="'--db'"
        )
    with tempfile.TemporaryDirectory(
        prefix="multiverify-demo-", ignore_cleanup_errors=True
    ) as scratch:
        path = db if db is not None else Path(scratch) / "demo.db"
        if as_json:
            session = _run(persona, policy, path, speed=speed, live=None, header=None)
            click.echo(json.dumps(verdict_json(session), indent=2))
            return
        console = Console(highlight=False)
        store = str(path) if db is not None else "a temporary SQLite file"
        header = _header(persona, policy, store)
        with Live(header, console=console, refresh_per_second=12) as live:
            session = _run(persona, policy, path, speed=speed, live=live, header=header)
        console.line()
        if session.verdict is not None:
            console.print(_verdict_panel(session.verdict))
        if session.status is SessionStatus.REVIEW:
            console.print(
                Text(
                    "The case waits in the review queue for a person's decision"
                    + (
                        f": multiverify review list --store {db}"
                        if db is not None
                        else " (keep it with --db to decide it)"
                    ),
                    style="dim",
                )
            )
        if db is not None:
            console.print(
                Text(
                    "Audit trail: multiverify audit export "
                    f"--db {db} {session.session_id}",
                    style="dim",
                )
            )


def _run(
    persona: Persona,
    policy: Policy,
    path: Path,
    *,
    speed: float,
    live: Live | None,
    header: Text | None,
) -> Session:
    try:
        return asyncio.run(
            _run_demo(persona, policy, path, speed=speed, live=live, header=header)
        )
    except PolicyError as exc:  # the policy names a channel the sandbox lacks
        _fail_policy(exc, policy.source or policy.name)
    except ConfigurationError as exc:  # --db is not a store
        raise click.ClickException(exc.message) from None


def _fail_policy(error: PolicyError, file: str, *, out: bool = False) -> NoReturn:
    """Print every located problem (to stdout when ``out``) and exit 1."""
    if not out:
        click.echo(error.message, err=True)
    for line in _problem_lines(error, file):
        click.echo(line, err=not out)
    raise SystemExit(1)


def _declared(names: Iterable[str]) -> dict[str, ChannelSpec]:
    """Specs for channels named on the command line (the built-in ones keep theirs)."""
    return {
        name: ChannelSpec(name=name) for name in names if name not in BUILTIN_CHANNELS
    }


# --- audit ------------------------------------------------------------------------


async def _export(db: Path, session_id: str | None, out: IO[str]) -> int:
    try:
        async with SqliteStore(db) as store:
            if session_id is not None and session_id not in await store.session_ids():
                raise click.ClickException(f"{db} has no session {session_id!r}")
            return AuditTrail.export_jsonl(await store.audit_events(session_id), out)
    except ConfigurationError as exc:  # not a store
        raise click.ClickException(exc.message) from None


async def _heads(db: Path, events: list[AuditEvent]) -> dict[str, str]:
    """The last audit hash the store holds for each session of ``events``."""
    try:
        async with SqliteStore(db) as store:
            known = set(await store.session_ids())
            heads = {}
            for session_id in sorted({event.session_id for event in events}):
                if session_id not in known:
                    raise click.ClickException(f"{db} has no session {session_id!r}")
                session, _ = await store.load(session_id)
                heads[session_id] = session.audit_head
            return heads
    except ConfigurationError as exc:  # not a store
        raise click.ClickException(exc.message) from None


# --- the commands -----------------------------------------------------------------


def create_cli() -> click.Group:
    """Build the ``multiverify`` command group (needs the ``cli`` extra)."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="multiverify", prog_name="multiverify")
    def cli() -> None:
        """Confirm a loan applicant over several channels; one explained verdict."""

    @cli.command()
    @click.option(
        "--persona",
        type=click.Choice(sorted(PERSONAS)),
        default="honest",
        show_default=True,
        help="Which sample applicant applies.",
    )
    @click.option(
        "--policy",
        "policy_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A policy file (TOML, YAML or JSON); the shipped demo policy by default.",
    )
    @click.option(
        "--json", "as_json", is_flag=True, help="Print only the verdict, as JSON."
    )
    @click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Keep the session in this SQLite file (a temporary one by default).",
    )
    @click.option(
        "--speed",
        type=click.FloatRange(min=0),
        default=1.0,
        envvar="MULTIVERIFY_DEMO_SPEED",
        hidden=True,
        help="Scales every simulated delay; 0 runs without waiting.",
    )
    def demo(
        persona: str,
        policy_file: Path | None,
        as_json: bool,
        db: Path | None,
        speed: float,
    ) -> None:
        """Run one verification offline, on sandbox vendors, with a persona.

        Shows each step's progress live, then the verdict and its explanation.
        """
        _demo(get_persona(persona), policy_file, as_json=as_json, db=db, speed=speed)

    @cli.group()
    def policy() -> None:
        """Check and explain policy files."""

    channel_option = click.option(
        "--channel",
        "channels",
        multiple=True,
        metavar="NAME",
        help="A channel your app registers, beyond the built-in ones (repeatable).",
    )

    # A missing file is the loader's to report, located like any file it
    # cannot read (exit 1); a directory is a usage error.
    policy_file = click.argument(
        "file", type=click.Path(dir_okay=False, path_type=Path)
    )

    @policy.command()
    @policy_file
    @channel_option
    def check(file: Path, channels: tuple[str, ...]) -> None:
        """Validate FILE; print every problem with its location (exit 1 if any)."""
        try:
            loaded = load_policy(file, channels=_declared(channels))
        except PolicyError as exc:
            _fail_policy(exc, str(file), out=True)
        click.echo(
            f"OK: {file}: policy {loaded.name}, version {loaded.version}, "
            f"sha256 {loaded.hash}"
        )

    @policy.command()
    @policy_file
    @channel_option
    def explain(file: Path, channels: tuple[str, ...]) -> None:
        """Describe the policy in FILE in plain words."""
        try:
            loaded = load_policy(file, channels=_declared(channels))
        except PolicyError as exc:
            _fail_policy(exc, str(file), out=True)
        click.echo(explain_policy(loaded))

    @cli.group()
    def audit() -> None:
        """Export and verify hash-chained audit trails."""

    @audit.command()
    @click.argument("file", type=click.File("r", encoding="utf-8"))
    @click.option(
        "--db",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The SQLite store the trail came from: each session's trail must "
        "also reach the last event the store holds (nothing cut off its end).",
    )
    def verify(file: IO[str], db: Path | None) -> None:
        """Check the hash chains of a JSONL audit export (exit 1 if tampered)."""
        try:
            events = AuditTrail.read_jsonl(file)
            heads = None if db is None else asyncio.run(_heads(db, events))
            count = AuditTrail.verify(events, heads=heads)
        except AuditIntegrityError as exc:
            click.echo(f"{file.name}: event {exc.index}: {exc.message}", err=True)
            raise SystemExit(1) from None
        except UnicodeDecodeError as exc:  # read lazily, line by line
            click.echo(f"{file.name}: not UTF-8 text: {exc.reason}", err=True)
            raise SystemExit(1) from None
        if not count:
            click.echo(f"{file.name}: no audit events", err=True)
            raise SystemExit(1)
        sessions = len({event.session_id for event in events})
        click.echo(
            f"OK: {_count(count, 'audit event')} verified "
            f"({_count(sessions, 'session')})"
        )

    @audit.command()
    @click.option(
        "--db",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The SQLite store to read.",
    )
    @click.argument("session_id", required=False)
    def export(db: Path, session_id: str | None) -> None:
        """Write the audit trail of SESSION_ID (or of every session) as JSONL."""
        count = asyncio.run(_export(db, session_id, sys.stdout))
        if not count:
            click.echo(f"{db}: no audit events", err=True)

    _register_commands(cli)
    return cli


def _register_commands(cli: click.Group) -> None:
    """Add the commands that live in modules of their own."""
    from ._cli_review import review_group  # noqa: PLC0415 - needs the cli extra
    from ._cli_simulate import simulate_command  # noqa: PLC0415 - it imports this module
    from ._cli_store import register as register_store  # noqa: PLC0415 - needs click
    from ._cli_worker import register as register_worker  # noqa: PLC0415 - needs click

    cli.add_command(review_group())
    cli.add_command(simulate_command())
    # The worker's module makes the ``store`` group; ``store purge`` joins it.
    register_worker(cli)
    register_store(cli)
