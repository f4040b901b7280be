"""``multiverify simulate``: backtest a policy on recorded sessions, in the terminal.

Registered by [`create_cli`][multiverify._cli.create_cli]; needs the ``cli``
extra like the rest of the command.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._cli import _fail_policy
from .backtest import (
    COLUMNS,
    PolicySummary,
    SimulationReport,
    load_labels,
    render_html,
    simulate_file,
)
from .exceptions import DatasetError, PolicyError
from .policy import Policy, load_policy

__all__ = ["simulate_command"]

_STYLE = {
    "approved": "green",
    "review": "yellow",
    "rejected": "red",
    "expired": "magenta",
    "missing_evidence": "dim",
}
_SHORT = {"missing_evidence": "missing"}
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _label(column: str) -> str:
    return column.replace("_", " ")


def _name(summary: PolicySummary) -> str:
    return f"{summary.policy.name} {summary.policy.version}"


def _summaries(report: SimulationReport) -> list[tuple[str, PolicySummary]]:
    out = [] if report.baseline is None else [("baseline", report.baseline)]
    return [*out, ("policy", report.policy)]


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def _outcomes(report: SimulationReport) -> Table:
    summaries = _summaries(report)
    table = Table(title="Outcomes", title_justify="left")
    table.add_column("outcome")
    for role, summary in summaries:
        table.add_column(f"{role}\n{_name(summary)}", justify="right")
    for column in COLUMNS:
        table.add_row(
            Text(_label(column), style=_STYLE[column]),
            *(
                _share(summary.outcomes[column], summary.sessions)
                for _, summary in summaries
            ),
        )
    return table


def _shifts(report: SimulationReport) -> Table:
    table = Table(
        title=f"Changed verdicts: {len(report.changes)} of {report.sessions}",
        title_justify="left",
    )
    table.add_column("baseline \u2192 policy")
    for column in COLUMNS:
        table.add_column(_label(column), justify="right")
    for before in COLUMNS:
        row = report.shifts[before]
        table.add_row(
            Text(_label(before), style=_STYLE[before]),
            *(
                Text(
                    str(row[after]),
                    style="bold" if before != after and row[after] else "dim",
                )
                for after in COLUMNS
            ),
        )
    return table


def _change_panels(report: SimulationReport, limit: int) -> list[Panel]:
    panels = []
    for change in report.changes[:limit]:
        body = Table.grid(expand=True, padding=(0, 2))
        body.add_column(ratio=1)
        body.add_column(ratio=1)
        body.add_row(Text("baseline", style="bold"), Text("policy", style="bold"))
        body.add_row(Text(change.before_explanation), Text(change.after_explanation))
        label = f" · label {change.label}" if change.label else ""
        panels.append(
            Panel(
                body,
                title=f"{change.session_id}: {_label(change.before)} \u2192 "
                f"{_label(change.after)}{label}",
                title_align="left",
            )
        )
    return panels


def _labels(report: SimulationReport) -> list[Table]:
    tables = []
    for role, summary in _summaries(report):
        labels = summary.labels
        if labels is None:
            return []
        table = Table(
            title=f"Against labels ({role}): {labels.labelled} labelled, "
            f"{labels.unlabelled} not",
            title_justify="left",
        )
        table.add_column("label")
        for column in COLUMNS:
            table.add_column(_SHORT.get(column, column), justify="right")
        for rate in ("approval", "review", "rejection"):
            table.add_column(f"{rate[:3]}. rate", justify="right")
        for label, row in labels.matrix.items():
            rates = labels.rates(label)
            table.add_row(
                label,
                *(str(row[column]) for column in COLUMNS),
                *(
                    f"{100 * rates[r]:.1f}%"
                    for r in ("approval", "review", "rejection")
                ),
            )
        tables.append(table)
    return tables


def _cost(report: SimulationReport) -> Table:
    summaries = _summaries(report)
    table = Table(title="Vendor cost and manual review", title_justify="left")
    table.add_column("")
    for role, _ in summaries:
        table.add_column(role, justify="right")

    def row(name: str, cells: list[str]) -> None:
        table.add_row(name, *cells)

    row("cost per session", [f"{s.cost.per_session:,.3f}" for _, s in summaries])
    row("total cost", [f"{s.cost.total:,.2f}" for _, s in summaries])
    steps: list[str] = []
    for _, summary in summaries:
        steps.extend(s.step_id for s in summary.cost.steps if s.step_id not in steps)
    for step_id in steps:
        cells = []
        for _, summary in summaries:
            found = next((s for s in summary.cost.steps if s.step_id == step_id), None)
            cells.append(
                ""
                if found is None
                else f"{found.attempts} \u00d7 "
                + (
                    "unpriced"
                    if found.price is None
                    else f"{found.price:g} = {found.cost:,.2f}"
                )
            )
        row(f"  {step_id}", cells)
    row(
        "review verdicts", [_share(s.review.sessions, s.sessions) for _, s in summaries]
    )
    if report.policy.review.hours is not None:
        row(
            "reviewer hours",
            [f"{s.review.hours or 0:,.1f}" for _, s in summaries],
        )
    return table


def _missing(report: SimulationReport, limit: int) -> Text:
    missing = report.policy.missing
    text = Text()
    text.append("Missing evidence: ", style="bold")
    if not missing.sessions:
        text.append("none; every step the policy needed was in the recording")
    else:
        per_step = ", ".join(f"{step} {count}" for step, count in missing.steps.items())
        text.append(f"{missing.sessions} sessions stay undecided (by step: {per_step})")
        for session_id, steps in missing.undecided[:limit]:
            reasons = "; ".join(f"{step}: {why}" for step, why in steps.items())
            text.append(f"\n  {session_id}  {reasons}", style="dim")
        if len(missing.undecided) > limit:
            text.append(
                f"\n  ... {len(missing.undecided) - limit} more (--json)", style="dim"
            )
    if missing.not_needed:
        text.append(
            f"\n{missing.not_needed} sessions lacked a step the verdict did not need.",
            style="dim",
        )
    return text


def render_terminal(
    report: SimulationReport, console: Console, *, changes: int
) -> None:
    """Print the report with rich."""
    policy = report.policy.policy
    header = Text()
    header.append("multiverify simulate", style="bold")
    header.append(
        f" — {report.sessions} sessions from {report.source} under "
        f"{policy.name} {policy.version} (sha256 {policy.hash[:12]})"
    )
    console.print(header)
    console.print(_outcomes(report))
    for role, summary in _summaries(report):
        check = summary.recorded
        if check.sessions:
            line = Text(
                f"Replay check ({role}): {check.agree} of {check.sessions} verdicts "
                "recorded under this policy come out the same",
                style="dim" if not check.disagree else "bold red",
            )
            if check.disagree:
                line.append(f"; differ: {', '.join(check.disagree[:changes])}")
            console.print(line)
    if report.baseline is not None:
        console.print(_shifts(report))
        for panel in _change_panels(report, changes):
            console.print(panel)
        if len(report.changes) > changes:
            console.print(
                Text(
                    f"{len(report.changes) - changes} more changed sessions: --json or --html",
                    style="dim",
                )
            )
    for table in _labels(report):
        console.print(table)
    if report.unmatched_labels:
        console.print(
            Text(
                f"{report.unmatched_labels} labels name sessions not in the data",
                style="dim",
            )
        )
    console.print(_cost(report))
    console.print(_missing(report, changes))


def _load(file: Path | None) -> Policy | None:
    if file is None:
        return None
    try:
        return load_policy(file)
    except PolicyError as exc:
        _fail_policy(exc, str(file))


def simulate_command() -> click.Command:
    """Build the ``simulate`` command."""

    @click.command()
    @click.option(
        "--policy", "policy_file", required=True, type=_FILE, help="The policy to try."
    )
    @click.option(
        "--sessions",
        "sessions_file",
        required=True,
        type=_FILE,
        help="Recorded sessions: an audit export or a dataset (JSON Lines).",
    )
    @click.option(
        "--baseline", "baseline_file", type=_FILE, help="The policy to compare with."
    )
    @click.option(
        "--labels",
        "labels_file",
        type=_FILE,
        help="CSV of session_id,label (fraud, default, good...).",
    )
    @click.option(
        "--html",
        "html_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write a self-contained HTML report here.",
    )
    @click.option(
        "--json", "as_json", is_flag=True, help="Print the report as JSON only."
    )
    @click.option(
        "--review-minutes",
        type=click.FloatRange(min=0),
        help="Reviewer minutes per review verdict, for the reviewer hours.",
    )
    @click.option(
        "--changes",
        "shown",
        type=click.IntRange(min=0),
        default=5,
        show_default=True,
        help="Changed and undecided sessions listed in the terminal.",
    )
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Worker processes (default: one per core for large files).",
    )
    def simulate(
        *,
        policy_file: Path,
        sessions_file: Path,
        baseline_file: Path | None,
        labels_file: Path | None,
        html_file: Path | None,
        as_json: bool,
        review_minutes: float | None,
        shown: int,
        workers: int | None,
    ) -> None:
        """Backtest a policy: re-decide recorded sessions, offline.

        Reports the outcomes, the sessions whose verdict changes against the
        baseline with both explanations, a confusion matrix against labels,
        the vendor cost per session, the manual-review load and any missing
        evidence.
        """
        if html_file is not None and not html_file.parent.is_dir():
            # Found before the replay, which may take minutes.
            raise click.BadParameter(
                f"no directory {html_file.parent} to write the report in",
                param_hint="'--html'",
            )
        policy = _load(policy_file)
        assert policy is not None  # noqa: S101 - the option is required
        baseline = _load(baseline_file)
        console = Console(highlight=False)
        try:
            labels = None if labels_file is None else load_labels(labels_file)
            run = functools.partial(
                simulate_file,
                policy,
                sessions_file,
                baseline=baseline,
                labels=labels,
                review_minutes=review_minutes,
                workers=workers,
            )
            if as_json:
                report = run()
            else:
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                ) as progress:
                    task = progress.add_task("replaying sessions", total=None)

                    def advance(done: int, total: int) -> None:
                        progress.update(task, completed=done, total=total)

                    report = run(on_progress=advance)
        except DatasetError as exc:
            click.echo(f"error: {exc.message}", err=True)
            raise SystemExit(1) from None
        if html_file is not None:
            try:
                html_file.write_text(render_html(report), encoding="utf-8")
            except OSError as exc:
                click.echo(f"error: cannot write {html_file}: {exc.strerror}", err=True)
                raise SystemExit(1) from None
        if as_json:
            click.echo(json.dumps(report.to_json(), indent=2))
            return
        render_terminal(report, console, changes=shown)
        if html_file is not None:
            console.print(Text(f"HTML report: {html_file}", style="dim"))

    return simulate
