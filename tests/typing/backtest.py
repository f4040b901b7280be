"""Type-checked, never run: backtesting as a risk team's script writes it."""

from __future__ import annotations

from pathlib import Path

from multiverify import ChannelResult, Outcome
from multiverify.backtest import (
    Plan,
    RecordedSession,
    RecordedStep,
    SimulationReport,
    load_labels,
    load_sessions,
    render_html,
    replay,
    simulate,
    simulate_file,
)
from multiverify.exceptions import DatasetError
from multiverify.policy import load_policy


def progress(done: int, total: int) -> None:
    del done, total


def backtest(folder: Path) -> SimulationReport:
    policy = load_policy(folder / "proposed.toml")
    try:
        report = simulate_file(
            policy,
            folder / "sessions.jsonl",
            baseline=load_policy(folder / "current.toml"),
            labels=load_labels(folder / "labels.csv"),
            review_minutes=12.5,
            workers=2,
            on_progress=progress,
        )
    except DatasetError as exc:
        where: tuple[str, int, str] = (exc.source, exc.line, exc.field)
        raise SystemExit(str(where)) from exc
    share: float = report.policy.review.share
    per_session: float = report.policy.cost.per_session
    rates: dict[str, float] = report.policy.rates()
    del share, per_session, rates
    for change in report.changes:
        text: str = change.before_explanation + change.after_explanation
        del text
    (folder / "report.html").write_text(render_html(report, limit=50))
    return report


def one_session(folder: Path) -> Outcome | None:
    policy = load_policy(folder / "proposed.toml")
    plan = Plan(policy)
    recorded = RecordedSession(
        session_id="s1",
        steps={
            "sms": RecordedStep(
                step_id="sms",
                channel="sms_code",
                result=ChannelResult(status="passed"),
                duration=20.0,
            )
        },
    )
    sessions: list[RecordedSession] = load_sessions(folder / "sessions.jsonl")
    simulate(policy, [recorded, *sessions])
    missing: dict[str, str] = dict(replay(plan, recorded).missing)
    del missing
    return replay(policy, recorded).outcome
