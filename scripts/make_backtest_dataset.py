"""Write the synthetic backtest dataset: recorded sessions and their outcome labels.

Run from the repository root::

    .venv/bin/python scripts/make_backtest_dataset.py              # examples/data/backtest/, 1000 sessions
    .venv/bin/python scripts/make_backtest_dataset.py --sessions 100000 --out /tmp/big

Each applicant is drawn with a fixed seed: a hidden label (``good``,
``fraud`` or ``default``), loan facts, and what every channel would answer for
them. The session is then run through the current policy
(``examples/data/backtest/current.toml``) with the pure core, and only the
steps that policy ran to an end are recorded, as a real recording would be:
a fraud alert rejects at once, so the call never happens; a video signing
happens only when the call fails. The same seed always writes the same files.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from multiverify import ChannelResult, Signal
from multiverify.backtest import Plan, RecordedSession, RecordedStep, replay
from multiverify.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "backtest"
SEED = 20261201
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
PURPOSES = ("phone", "laptop", "furniture", "travel", "education", "car repair")


def _clip(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 2)


def _step(
    status: str,
    signals: list[str],
    duration: float,
    *,
    score: float | None = None,
) -> dict[str, Any]:
    step: dict[str, Any] = {"status": status, "signals": signals}
    if score is not None:
        step["score"] = score
    step["duration"] = f"{duration:g}s"
    return step


def _bureau(rng: random.Random, label: str) -> dict[str, Any]:
    duration = round(rng.uniform(0.4, 3.5), 1)
    if label == "fraud":
        roll = rng.random()
        if roll < 0.35:
            return _step("failed", ["fraud_alert"], duration, score=_clip(rng.gauss(0.3, 0.1)))
        if roll < 0.55:
            return _step("failed", ["identity_mismatch"], duration, score=_clip(rng.gauss(0.35, 0.1)))
        return _step("passed", ["identity_match"], duration, score=_clip(rng.gauss(0.62, 0.12)))
    if label == "default":
        signals = ["identity_match"]
        if rng.random() < 0.4:
            signals.append("delinquent")
        if rng.random() < 0.35:
            signals.append("many_recent_inquiries")
        return _step("passed", signals, duration, score=_clip(rng.gauss(0.55, 0.12)))
    signals = ["identity_match"]
    if rng.random() < 0.06:
        signals.append("thin_file")
    if rng.random() < 0.08:
        signals.append("many_recent_inquiries")
    return _step("passed", signals, duration, score=_clip(rng.gauss(0.84, 0.08)))


def _sms(rng: random.Random, label: str) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.03:
        return _step("timeout", [], 300)
    if roll < (0.12 if label == "fraud" else 0.06):
        return _step("failed", ["attempts_exhausted"], round(rng.uniform(40, 200)))
    return _step("passed", ["code_verified"], round(rng.uniform(15, 150)))


def _call(rng: random.Random, label: str) -> dict[str, Any]:
    roll = rng.random()
    duration = round(rng.uniform(90, 420))
    if roll < 0.03:
        return _step("timeout", ["no_answer"], 600)
    if roll < 0.10:
        return _step("failed", ["no_answer"], duration)
    confirmed = ["identity_confirmed", "intent_confirmed", "details_completed"]
    if label == "fraud":
        roll = rng.random()
        if roll < 0.2:
            return _step("failed", ["identity_mismatch"], duration, score=0.1)
        if roll < 0.65:
            risk = rng.choice(["coached", "third_party_present", "evasive_answer"])
            return _step("passed", [*confirmed, risk], duration, score=0.6)
    if label == "default" and rng.random() < 0.25:
        return _step("passed", [*confirmed, "hesitant"], duration, score=0.75)
    if label == "good" and rng.random() < 0.04:
        return _step("passed", [*confirmed, "hesitant"], duration, score=0.8)
    return _step("passed", confirmed, duration, score=1.0)


def _video(rng: random.Random, label: str) -> dict[str, Any]:
    duration = round(rng.uniform(120, 700))
    if rng.random() < 0.08:
        return _step("failed", ["abandoned"], duration)
    if label == "fraud" and rng.random() < 0.5:
        return _step("failed", ["liveness_passed", "face_mismatch"], duration, score=0.2)
    return _step(
        "passed",
        ["liveness_passed", "face_match", "statement_confirmed"],
        duration,
        score=_clip(rng.gauss(0.9, 0.05)),
    )


CHANNELS = {
    "bureau": ("credit_bureau", _bureau),
    "sms": ("sms_code", _sms),
    "call": ("phone_call", _call),
    "video": ("video_sign", _video),
}


def _applicant(rng: random.Random, number: int) -> tuple[str, dict[str, Any]]:
    roll = rng.random()
    label = "fraud" if roll < 0.06 else "default" if roll < 0.14 else "good"
    amount = round(min(50000.0, max(500.0, math.exp(rng.gauss(8.7, 0.8)))), -2)
    facts = {
        "applicant": {
            "id": f"applicant-{number:06d}",
            "age": rng.randint(20, 65),
            "phone_country": "CN",
        },
        "application": {
            "amount": amount,
            "currency": "CNY",
            "term_months": rng.choice([6, 12, 12, 24, 36]),
            "purpose": rng.choice(PURPOSES),
        },
    }
    return label, facts


def _recorded(
    number: int, label: str, facts: dict[str, Any], answers: dict[str, dict[str, Any]]
) -> RecordedSession:
    steps = {}
    for step_id, answer in answers.items():
        steps[step_id] = RecordedStep(
            step_id=step_id,
            channel=CHANNELS[step_id][0],
            duration=float(answer["duration"].removesuffix("s")),
            result=ChannelResult(
                status=answer["status"],
                signals=[Signal(name=name) for name in answer["signals"]],
                score=answer.get("score"),
            ),
        )
    return RecordedSession(
        session_id=f"s-{number:06d}",
        facts=facts,
        steps=steps,
        created_at=START + timedelta(minutes=7 * number),
    )


def generate(count: int, seed: int = SEED) -> tuple[list[str], list[str]]:
    """The dataset's JSON lines and the labels' CSV lines."""
    rng = random.Random(seed)
    plan = Plan(load_policy(DATA / "current.toml"))
    lines = []
    labels = ["session_id,label"]
    for number in range(1, count + 1):
        label, facts = _applicant(rng, number)
        answers = {
            step_id: make(rng, label) for step_id, (_, make) in CHANNELS.items()
        }
        recorded = _recorded(number, label, facts, answers)
        ran = replay(plan, recorded).verdict
        assert ran is not None  # every step has an answer: the policy decides
        ended = {
            summary.step_id
            for summary in ran.steps
            if summary.result is not None and summary.result.status.value != "cancelled"
        }
        record = {
            "session_id": recorded.session_id,
            "created_at": recorded.created_at.isoformat(),
            "facts": facts,
            "steps": {
                step_id: {"channel": CHANNELS[step_id][0], **answers[step_id]}
                for step_id in CHANNELS
                if step_id in ended
            },
        }
        lines.append(json.dumps(record, separators=(",", ":")))
        labels.append(f"{recorded.session_id},{label}")
    return lines, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()
    lines, labels = generate(args.sessions, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sessions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} sessions to {args.out}")


if __name__ == "__main__":
    main()
