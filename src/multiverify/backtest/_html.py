"""The backtest report as one self-contained HTML page, its charts in inline SVG.

No script, stylesheet, font or image is fetched: the page is one file to
attach to a risk committee's ticket. The markup is well-formed XML.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from ._report import COLUMNS, PolicySummary, SimulationReport

__all__ = ["render_html"]

_COLOURS = {
    "approved": "#2e7d32",
    "review": "#f9a825",
    "rejected": "#c62828",
    "expired": "#6a1b9a",
    "missing_evidence": "#757575",
}
_SERIES = ("#90a4ae", "#3949ab")  # baseline, policy
_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:70rem;color:#212121;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.muted{color:#757575}
pre{background:#fafafa;border:1px solid #eee;padding:.6rem;white-space:pre-wrap;font-size:.8rem}
details{margin:.3rem 0}summary{cursor:pointer}.pair{display:flex;gap:1rem;flex-wrap:wrap}.pair>div{flex:1;min-width:20rem}
"""


def _label(column: str) -> str:
    return column.replace("_", " ")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1
) -> str:
    def cell(tag: str, index: int, text: str) -> str:
        cls = ' class="l"' if index < left else ""
        return f"<{tag}{cls}>{text}</{tag}>"

    head = "".join(cell("th", i, escape(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, text) for i, text in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bars(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    colours: Sequence[str] | None = None,
    fmt: str = "{:g}",
) -> str:
    """A horizontal grouped bar chart: one group per category, one bar per series."""
    width, label_width, bar, gap = 640, 150, 16, 10
    group = bar * len(series) + gap
    height = 30 + group * len(categories) + 20 * len(series)
    peak = max((value for _, values in series for value in values), default=0) or 1
    scale = (width - label_width - 70) / peak
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        ),
        f'<text x="0" y="16" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for index, category in enumerate(categories):
        top = 30 + index * group
        parts.append(
            f'<text x="{label_width - 8}" y="{top + bar * len(series) / 2 + 4:g}" '
            f'font-size="12" text-anchor="end">{escape(_label(category))}</text>'
        )
        for position, (_, values) in enumerate(series):
            value = values[index]
            colour = (
                colours[index]
                if colours is not None and len(series) == 1
                else _SERIES[position % len(_SERIES)]
                if len(series) > 1
                else _SERIES[1]
            )
            y = top + position * bar
            length = max(value * scale, 0)
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="{length:.1f}" '
                f'height="{bar - 2}" fill="{colour}"><title>{escape(fmt.format(value))}'
                "</title></rect>"
            )
            parts.append(
                f'<text x="{label_width + length + 4:.1f}" y="{y + bar - 4}" '
                f'font-size="11">{escape(fmt.format(value))}</text>'
            )
    legend_top = 30 + group * len(categories)
    if len(series) > 1:
        for position, (name, _) in enumerate(series):
            y = legend_top + position * 20
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="12" height="12" '
                f'fill="{_SERIES[position % len(_SERIES)]}"/>'
                f'<text x="{label_width + 18}" y="{y + 11}" font-size="12">'
                f"{escape(name)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _name(summary: PolicySummary) -> str:
    return f"{summary.policy.name} {summary.policy.version}"


def _summaries(report: SimulationReport) -> list[tuple[str, PolicySummary]]:
    out = []
    if report.baseline is not None:
        out.append((f"baseline: {_name(report.baseline)}", report.baseline))
    out.append((f"policy: {_name(report.policy)}", report.policy))
    return out


def _outcomes(report: SimulationReport) -> str:
    summaries = _summaries(report)
    chart = _bars(
        "Outcomes (sessions)",
        COLUMNS,
        [
            (name, [summary.outcomes[column] for column in COLUMNS])
            for name, summary in summaries
        ],
        colours=[_COLOURS[column] for column in COLUMNS],
    )
    rows = [
        [escape(_label(column))]
        + [
            f"{summary.outcomes[column]} ({_percent(summary.outcomes[column] / summary.sessions if summary.sessions else 0)})"
            for _, summary in summaries
        ]
        for column in COLUMNS
    ]
    table = _table(["outcome", *(name for name, _ in summaries)], rows)
    reasons = "".join(
        f"<div><h3>Reasons, {escape(name)}</h3>"
        + _table(
            ["reason", "sessions"],
            [[escape(code), str(count)] for code, count in summary.reasons.items()],
        )
        + "</div>"
        for name, summary in summaries
    )
    checks = "".join(
        f'<p class="muted">Replay check ({escape(name)}): {summary.recorded.agree} of '
        f"{summary.recorded.sessions} verdicts recorded under this policy come out the "
        f"same{_differ(summary.recorded.disagree)}.</p>"
        for name, summary in summaries
        if summary.recorded.sessions
    )
    return f'<h2>Outcomes</h2>{chart}{table}{checks}<div class="pair">{reasons}</div>'


def _differ(session_ids: Sequence[str]) -> str:
    if not session_ids:
        return ""
    return "; they differ for " + escape(", ".join(session_ids[:20]))


def _changes(report: SimulationReport, limit: int) -> str:
    if report.baseline is None:
        return ""
    heat = max(
        (
            count
            for before, row in report.shifts.items()
            for after, count in row.items()
            if before != after
        ),
        default=0,
    )

    def shade(before: str, after: str, count: int) -> str:
        if before == after or not count or not heat:
            return str(count)
        alpha = 0.15 + 0.6 * count / heat
        return f'<span style="background:rgba(57,73,171,{alpha:.2f});padding:0 .3rem">{count}</span>'

    matrix = _table(
        ["baseline \u2192 policy", *(_label(c) for c in COLUMNS)],
        [
            [escape(_label(before))]
            + [shade(before, after, report.shifts[before][after]) for after in COLUMNS]
            for before in COLUMNS
        ],
    )
    items = []
    for change in report.changes[:limit]:
        label = f" (label {escape(change.label)})" if change.label else ""
        items.append(
            f"<details><summary>{escape(change.session_id)}: "
            f"{escape(_label(change.before))} ({escape(change.before_reason)}) \u2192 "
            f"{escape(_label(change.after))} ({escape(change.after_reason)}){label}"
            '</summary><div class="pair">'
            f"<div><h4>baseline</h4><pre>{escape(change.before_explanation)}</pre></div>"
            f"<div><h4>policy</h4><pre>{escape(change.after_explanation)}</pre></div>"
            "</div></details>"
        )
    more = len(report.changes) - limit
    tail = (
        f'<p class="muted">{more} more in the JSON report (--json).</p>'
        if more > 0
        else ""
    )
    return (
        f"<h2>Changed verdicts: {len(report.changes)} of {report.sessions}</h2>"
        f"{matrix}{''.join(items)}{tail}"
    )


def _labels(report: SimulationReport) -> str:
    parts = []
    for name, summary in _summaries(report):
        labels = summary.labels
        if labels is None:
            return ""
        rows = []
        for label, row in labels.matrix.items():
            rates = labels.rates(label)
            rows.append(
                [escape(label)]
                + [str(row[column]) for column in COLUMNS]
                + [
                    _percent(rates["approval"]),
                    _percent(rates["review"]),
                    _percent(rates["rejection"]),
                ]
            )
        parts.append(
            f"<div><h3>{escape(name)}</h3>"
            + _table(
                [
                    "label",
                    *(_label(c) for c in COLUMNS),
                    "approval",
                    "review",
                    "rejection",
                ],
                rows,
            )
            + f'<p class="muted">{labels.labelled} labelled, {labels.unlabelled} without a label</p></div>'
        )
    names = list(report.policy.labels.matrix) if report.policy.labels else []
    chart = _bars(
        "Approval rate by label",
        names,
        [
            (name, [summary.labels.rates(label)["approval"] for label in names])
            for name, summary in _summaries(report)
            if summary.labels is not None
        ],
        fmt="{:.1%}",
    )
    unmatched = (
        f'<p class="muted">{report.unmatched_labels} labels name sessions not in the data.</p>'
        if report.unmatched_labels
        else ""
    )
    return (
        f"<h2>Against labels</h2>{chart}"
        f'<div class="pair">{"".join(parts)}</div>{unmatched}'
    )


def _cost(report: SimulationReport) -> str:
    summaries = _summaries(report)
    steps: list[str] = []
    for _, summary in summaries:
        for step in summary.cost.steps:
            if step.step_id not in steps:
                steps.append(step.step_id)

    def step_cost(summary: PolicySummary, step_id: str) -> float:
        return next(
            (s.cost for s in summary.cost.steps if s.step_id == step_id), 0.0
        ) / (summary.sessions or 1)

    chart = _bars(
        "Vendor cost per session, by step",
        steps,
        [(name, [step_cost(summary, s) for s in steps]) for name, summary in summaries],
        fmt="{:.3f}",
    )
    rows = []
    for name, summary in summaries:
        review = summary.review
        hours = "" if review.hours is None else f"{review.hours:,.1f}"
        rows.append(
            [
                escape(name),
                _money(summary.cost.per_session),
                _money(summary.cost.total),
                escape(", ".join(summary.cost.unpriced)) or "none",
                str(review.sessions),
                _percent(review.share),
                hours,
            ]
        )
    table = _table(
        [
            "",
            "cost per session",
            "total cost",
            "unpriced steps",
            "reviews",
            "review share",
            "reviewer hours",
        ],
        rows,
    )
    return f"<h2>Cost and manual review</h2>{chart}{table}"


def _missing(report: SimulationReport, limit: int) -> str:
    missing = report.policy.missing
    if not missing.sessions and not missing.not_needed:
        return "<h2>Missing evidence</h2><p>Every step the policy needed was in the recording.</p>"
    chart = (
        _bars(
            "Undecided sessions, by missing step",
            list(missing.steps),
            [("policy", list(missing.steps.values()))],
        )
        if missing.steps
        else ""
    )
    rows = [
        [escape(session_id), escape("; ".join(f"{k}: {v}" for k, v in steps.items()))]
        for session_id, steps in missing.undecided[:limit]
    ]
    table = _table(["session", "missing steps"], rows, left=2) if rows else ""
    more = len(missing.undecided) - limit
    tail = f'<p class="muted">{more} more in the JSON report.</p>' if more > 0 else ""
    return (
        f"<h2>Missing evidence</h2><p>{missing.sessions} sessions stay undecided: the "
        "policy needs a step the recording never ran to an end. "
        f"{missing.not_needed} more lacked a step the verdict did not need.</p>"
        f"{chart}{table}{tail}"
    )


def render_html(report: SimulationReport, *, limit: int = 100) -> str:
    """The report as a self-contained HTML page with inline SVG charts.

    Args:
        report: the report.
        limit: how many changed and undecided sessions to list (all are in
            the JSON report).

    Returns:
        The page, well-formed XML in HTML's syntax.
    """
    title = f"Backtest of {_name(report.policy)}"
    against = (
        f" against {escape(_name(report.baseline))}"
        if report.baseline is not None
        else ""
    )
    head = (
        f"<p>{report.sessions} recorded sessions from <code>{escape(report.source)}</code>, "
        f"re-decided under {escape(_name(report.policy))} "
        f'<span class="muted">(sha256 {escape(report.policy.policy.hash[:12])})</span>{against}.</p>'
    )
    body = (
        _outcomes(report)
        + _changes(report, limit)
        + _labels(report)
        + _cost(report)
        + _missing(report, limit)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{head}{body}</body></html>\n"
    )
