"""The shipped synthetic dataset: written by its script, and as the guide describes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from multiverify.backtest import load_labels, simulate_file
from multiverify.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "backtest"


def generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_backtest_dataset", ROOT / "scripts" / "make_backtest_dataset.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_the_shipped_files() -> None:
    """The fixed seed gives back the shipped sessions and labels exactly."""
    lines, labels = generator().generate(1000)
    assert "\n".join(lines) + "\n" == (DATA / "sessions.jsonl").read_text(
        encoding="utf-8"
    )
    assert "\n".join(labels) + "\n" == (DATA / "labels.csv").read_text(encoding="utf-8")


def test_the_guide_figures() -> None:
    """The numbers the backtesting guide quotes are the report's."""
    report = simulate_file(
        load_policy(DATA / "proposed.toml"),
        DATA / "sessions.jsonl",
        baseline=load_policy(DATA / "current.toml"),
        labels=load_labels(DATA / "labels.csv"),
        review_minutes=12,
    )
    assert report.baseline is not None
    assert dict(report.baseline.outcomes) == {
        "approved": 846,
        "review": 114,
        "rejected": 40,
        "expired": 0,
        "missing_evidence": 0,
    }
    assert dict(report.policy.outcomes) == {
        "approved": 782,
        "review": 99,
        "rejected": 72,
        "expired": 0,
        "missing_evidence": 47,
    }
    assert len(report.changes) == 113
    assert round(report.baseline.cost.per_session, 3) == 1.168
    assert round(report.policy.cost.per_session, 3) == 1.082
    assert dict(report.policy.missing.steps) == {"sms": 5, "video_large": 42}
    assert (report.baseline.review.hours, report.policy.review.hours) == (22.8, 19.8)
    assert report.baseline.labels is not None
    assert report.policy.labels is not None
    assert report.baseline.labels.rates("default")["rejection"] == 0
    assert round(report.policy.labels.rates("default")["rejection"], 3) == 0.315
    guide = (ROOT / "docs" / "guides" / "backtesting.md").read_text(encoding="utf-8")
    for figure in (
        "846 (84.6%)",
        "782 (78.2%)",
        "Changed verdicts: 113 of 1000",
        "sms 5, video_large 42",
        "31.5 %",
    ):
        assert figure in guide, figure
