"""Backtests decide as the embedded Verifier does, from datasets and from its audit exports."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import attrs
import pytest

from multiverify import (
    Applicant,
    AuditEvent,
    AuditTrail,
    Fallback,
    LoanApplication,
    Policy,
    Rule,
    Step,
    Verdict,
    Verifier,
)
from multiverify._audit import GENESIS, _digest
from multiverify.backtest import RecordedCheck, parse_sessions, replay, simulate_file
from multiverify.backtest._records import EPOCH, _Line, _Steps
from multiverify.channels import ProviderEvent, StepContext, StepMessage, StepOutcome
from multiverify.exceptions import DatasetError, ProviderRejectedError
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

POLICY = Policy(
    name="agree",
    version="1",
    deadline="1h",
    steps=[
        Step(id="bureau", channel="credit_bureau", timeout="10s", price=0.4),
        Step(id="sms", channel="sms_code", timeout="5m", price=0.05),
        Step(
            id="call",
            channel="phone_call",
            after=["bureau"],
            when="application.amount > 1000.0",
            timeout="10m",
            fallback=Fallback(step="video", on=["failed", "timeout", "error"]),
            providers=["twilio", "vonage"],
            price=0.6,
        ),
        Step(id="video", channel="video_sign", timeout="15m", price=1.5),
    ],
    rules=[
        Rule(
            outcome="rejected",
            when="'fraud_alert' in steps.bureau.signals",
            reason="fraud",
        ),
        Rule(
            outcome="rejected",
            when="'face_mismatch' in steps.video.signals",
            reason="face",
        ),
        Rule(
            outcome="review",
            when="steps.call.signals.exists(s, s in ['hesitant', 'coached'])",
            reason="call.risk",
        ),
        Rule(
            outcome="approved",
            when="steps.bureau.status == 'passed' && steps.sms.status == 'passed' "
            "&& (steps.call.status in ['passed', 'skipped'] || steps.video.status == 'passed')",
            reason="ok",
        ),
    ],
)

PASS = Scripted.passes
REJECTED = ProviderRejectedError(message="refused", provider="twilio")

# Per case: the amount and each channel's scripted answers (the last repeats).
CASES: dict[str, tuple[str, dict[str, list[Scripted]]]] = {
    "all pass": ("5000", {}),
    "small loan, no call": ("800", {}),
    "fraud": ("5000", {"credit_bureau": [Scripted.fails(signals=["fraud_alert"])]}),
    "call fails, video passes": (
        "5000",
        {"phone_call": [Scripted.fails(signals=["no_answer"])]},
    ),
    "call fails, face mismatch": (
        "5000",
        {
            "phone_call": [Scripted.fails(signals=["no_answer"])],
            "video_sign": [Scripted.fails(signals=["face_mismatch"], score=0.1)],
        },
    ),
    "hesitant": ("5000", {"phone_call": [PASS(signals=["hesitant"], score=0.7)]}),
    "sms fails": ("5000", {"sms_code": [Scripted.fails(signals=["wrong_code"])]}),
    "call errors on both providers": (
        "5000",
        {"phone_call": [Scripted.raises(REJECTED)]},
    ),
    "call times out": ("5000", {"phone_call": [PASS(delay=900)]}),
}


def applicant(amount: str) -> Applicant:
    return Applicant(
        applicant_id="a1",
        name="Zhang San",
        national_id="110101199003071234",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount=amount, currency="CNY", term_months=12, purpose="phone"
        ),
    )


def channels(answers: dict[str, list[Scripted]]) -> list[ScriptedChannel]:
    defaults = {
        "credit_bureau": [PASS(signals=["identity_match"], score=0.9)],
        "sms_code": [PASS(signals=["code_verified"])],
        "phone_call": [PASS(signals=["intent_confirmed"], score=1.0)],
        "video_sign": [PASS(signals=["face_match"], score=0.95)],
    }
    return [
        ScriptedChannel(name, answers.get(name, script))
        for name, script in defaults.items()
    ]


async def run_case(
    amount: str, answers: dict[str, list[Scripted]]
) -> tuple[Verdict, list[Any]]:
    clock = FakeClock()
    store = MemoryStore()
    async with Verifier(
        POLICY, channels=channels(answers), store=store, clock=clock
    ) as verifier:
        session = await verifier.start(applicant(amount))
        for _ in range(4):  # through the call's timeout and the video
            await verifier.wait_idle()
            await clock.advance(600)
        await verifier.wait_idle()
        verdict = await verifier.wait(session.session_id)
        events = await store.audit_events(session.session_id)
    return verdict, events


def shape(verdict: Verdict | None) -> Any:
    """Everything a verdict decides, without its times."""
    assert verdict is not None
    return (
        verdict.outcome,
        verdict.reasons,
        verdict.rules,
        verdict.decided_by,
        verdict.score,
        [
            (
                s.step_id,
                s.state,
                None
                if s.result is None
                else (s.result.status, s.result.signal_names, s.result.score),
            )
            for s in verdict.steps
        ],
    )


@pytest.mark.parametrize("case", list(CASES))
async def test_replaying_the_audit_export_agrees_with_the_verifier(case: str) -> None:
    """The verdict replayed from an audit export is the Verifier's own."""
    amount, answers = CASES[case]
    verdict, events = await run_case(amount, answers)
    out = io.StringIO()
    AuditTrail.export_jsonl(events, out)
    [recorded] = parse_sessions(out.getvalue().splitlines())
    assert recorded.recorded is verdict.outcome
    assert recorded.recorded_policy == POLICY.ref
    simulated = replay(POLICY, recorded)
    assert shape(simulated.verdict) == shape(verdict)
    # Only steps the verdict cancelled lack a recorded result: they were not needed.
    assert set(simulated.missing) == {
        s.step_id for s in verdict.steps if s.state == "cancelled"
    }


@pytest.mark.parametrize("case", list(CASES))
async def test_a_dataset_of_the_same_results_agrees_with_the_verifier(
    case: str,
) -> None:
    """A dataset holding the results the Verifier saw is decided the same way."""
    amount, answers = CASES[case]
    verdict, _ = await run_case(amount, answers)
    steps = {
        s.step_id: {
            "channel": s.channel,
            "status": s.result.status.value,
            "signals": list(s.result.signal_names),
            "score": s.result.score,
            "attempts": s.result.attempts,
            "duration": (s.result.finished_at - s.result.started_at).total_seconds()  # type: ignore[operator]
            if s.result.started_at and s.result.finished_at
            else 0,
        }
        for s in verdict.steps
        if s.result is not None and s.result.status.value != "cancelled"
    }
    line = json.dumps(
        {
            "session_id": "d1",
            "created_at": "2026-01-01T09:00:00+00:00",
            "facts": {"application": {"amount": float(amount)}},
            "steps": steps,
        }
    )
    [recorded] = parse_sessions([line])
    assert shape(replay(POLICY, recorded).verdict) == shape(verdict)


async def test_simulating_an_export_of_many_sessions(tmp_path: Path) -> None:
    """A whole export: outcomes match the recorded verdicts; cost counts failovers."""
    path = tmp_path / "export.jsonl"
    recorded = []
    with path.open("w") as out:
        for amount, answers in CASES.values():
            verdict, events = await run_case(amount, answers)
            recorded.append(verdict.outcome.value)
            AuditTrail.export_jsonl(events, out)
    report = simulate_file(POLICY, path)
    assert report.sessions == len(CASES)
    outcomes = report.policy.outcomes
    assert {k: v for k, v in outcomes.items() if v} == {
        outcome: recorded.count(outcome) for outcome in set(recorded)
    }
    call = next(step for step in report.policy.cost.steps if step.step_id == "call")
    # one attempt per session with a call, two where both providers errored
    assert call.attempts == call.sessions + 1
    assert report.policy.missing.sessions == 0
    assert report.policy.recorded == RecordedCheck(
        sessions=len(CASES), agree=len(CASES)
    )
    # Worker processes, and an export written with another key order, agree.
    assert simulate_file(POLICY, path, workers=2).to_json() == report.to_json()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text(
        "".join(
            json.dumps(dict(reversed(json.loads(line).items()))) + "\n"
            for line in path.read_text().splitlines()
        )
    )
    again = simulate_file(POLICY, shuffled).to_json()
    first = report.to_json()
    assert (again.pop("source"), first.pop("source")) == (str(shuffled), str(path))
    assert again == first


class CrashingCall(ScriptedChannel):
    """A phone call that is placed, then crashes on the first callback."""

    def __init__(self) -> None:
        super().__init__("phone_call", [Scripted.waits(PASS())])

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        raise KeyError("CallStatus")


async def test_a_crash_while_handling_input_replays_from_the_export() -> None:
    """A call that crashed on its callback ended in error without failover; the replay ends it there too."""
    clock = FakeClock()
    store = MemoryStore()
    call = CrashingCall()
    scripted = [c for c in channels({}) if c.spec.name != "phone_call"]
    async with Verifier(
        POLICY, channels=[*scripted, call], store=store, clock=clock
    ) as verifier:
        session = await verifier.start(applicant("5000"))
        await verifier.wait_idle()
        await verifier.handle_event(
            ProviderEvent(session_id=session.session_id, step_id="call", kind="status")
        )
        for _ in range(2):
            await verifier.wait_idle()
            await clock.advance(600)
        verdict = await verifier.wait(session.session_id)
        events = await store.audit_events(session.session_id)
    assert len(call.starts) == 1
    call_summary = next(s for s in verdict.steps if s.step_id == "call")
    assert call_summary.result is not None
    assert call_summary.result.status.value == "error"
    out = io.StringIO()
    AuditTrail.export_jsonl(events, out)
    [recorded] = parse_sessions(out.getvalue().splitlines())
    assert recorded.steps["call"].failover is False
    simulated = replay(POLICY, recorded)
    assert shape(simulated.verdict) == shape(verdict)
    assert simulated.missing == {}
    assert simulated.attempts["call"] == 1


def test_a_dataset_error_without_failover_ends_the_step_at_its_first_provider() -> None:
    """A dataset's ``"failover": false`` says the error ended the step: the replay tries no other provider."""
    line = json.dumps(
        {
            "session_id": "d1",
            "facts": {"application": {"amount": 5000.0}},
            "steps": {
                "bureau": {"channel": "credit_bureau", "status": "passed"},
                "sms": {"channel": "sms_code", "status": "passed"},
                "call": {
                    "channel": "phone_call",
                    "status": "error",
                    "detail": "channel error: KeyError",
                    "failover": False,
                },
                "video": {"channel": "video_sign", "status": "passed"},
            },
        }
    )
    [recorded] = parse_sessions([line])
    result = replay(POLICY, recorded)
    assert result.missing == {}
    assert result.attempts["call"] == 1
    assert result.outcome is not None
    assert result.outcome.value == "approved"  # the video took over on the error


def test_an_error_recorded_before_the_failover_flag_fails_over() -> None:
    """An export's ``StepErrored`` without ``failover`` reads as the old behaviour: the step ended for want of providers."""
    steps = _Steps()
    steps.channels["call"] = "phone_call"
    steps.started["call"] = EPOCH
    steps.attempt["call"] = 2
    line = _Line("export", 1)
    data = {
        "input": {
            "type": "StepErrored",
            "step_id": "call",
            "attempt": 2,
            "at": EPOCH.isoformat(),
            "error": "503",
        }
    }
    steps.apply(line, data)
    assert steps.ended["call"].failover is True


def test_an_error_on_fewer_providers_than_the_policy_tries_is_missing() -> None:
    """A recording that errored on one provider says nothing about a second."""
    line = json.dumps(
        {
            "session_id": "d1",
            "facts": {"application": {"amount": 5000.0}},
            "steps": {
                "bureau": {"channel": "credit_bureau", "status": "passed"},
                "sms": {"channel": "sms_code", "status": "passed"},
                "call": {"channel": "phone_call", "status": "error", "detail": "503"},
            },
        }
    )
    [recorded] = parse_sessions([line])
    result = replay(POLICY, recorded)
    assert result.outcome is None
    assert result.missing == {
        "call": "errored on 1 provider attempt(s) in the recording; the policy tries another"
    }
    assert result.attempts["call"] == 2


def test_audit_export_problems(tmp_path: Path) -> None:
    """Broken audit exports name the line."""
    created = {
        "session_id": "x",
        "index": 0,
        "kind": "session.created",
        "data": {"created_at": "2026-01-01T09:00:00+00:00", "facts": {}, "steps": []},
    }
    start = {
        "session_id": "x",
        "index": 1,
        "kind": "input",
        "data": {
            "input": {"type": "Start", "at": "2026-01-01T09:00:00+00:00"},
            "effects": 3,
        },
    }
    cases = [
        ([created, {"session_id": "x", "kind": "input", "data": {}}], 2, "index"),
        ([created, {**created, "index": "1"}], 2, "index"),
        ([created, {**created, "session_id": 1}], 2, "session_id"),
        ([{**created, "kind": "input"}], 1, "kind"),
        ([created, start], 2, "data.effects"),
        (
            [created, {**start, "data": {"input": {"type": "Start", "at": "never"}}}],
            2,
            "data.input.at",
        ),
        (
            [created, {**start, "kind": "verdict", "data": {"outcome": "maybe"}}],
            2,
            "data.outcome",
        ),
        ([{**created, "data": {"created_at": 5}}], 1, "data.created_at"),
    ]
    for events, line, field in cases:
        text = [json.dumps(event) for event in events]
        with pytest.raises(DatasetError) as info:
            parse_sessions(text, source="e.jsonl")
        assert (info.value.line, info.value.field) == (line, field), events


def test_a_mangled_result_in_an_export(tmp_path: Path) -> None:
    """A StepFinished whose result cannot be read is located."""
    at = "2026-01-01T09:00:00+00:00"
    events = [
        {
            "session_id": "x",
            "index": 0,
            "kind": "session.created",
            "data": {"created_at": at, "facts": {}, "steps": ["sms"]},
        },
        {
            "session_id": "x",
            "index": 1,
            "kind": "input",
            "data": {
                "input": {"type": "Start", "at": at},
                "effects": [
                    {
                        "type": "StartStep",
                        "step_id": "sms",
                        "attempt": 1,
                        "channel": "sms_code",
                    }
                ],
            },
        },
        {
            "session_id": "x",
            "index": 2,
            "kind": "input",
            "data": {
                "input": {
                    "type": "StepFinished",
                    "step_id": "sms",
                    "attempt": 1,
                    "at": at,
                    "result": {"status": "passed", "signals": [{"detail": ""}]},
                }
            },
        },
    ]
    with pytest.raises(DatasetError) as info:
        parse_sessions([json.dumps(e) for e in events], source="e")
    assert (info.value.line, info.value.field) == (3, "data.input.result")
    assert "not a channel result: KeyError" in info.value.message
    events[2]["data"]["input"]["result"]["signals"] = "x"  # type: ignore[index]
    with pytest.raises(DatasetError, match="signals and evidence must be lists"):
        parse_sessions([json.dumps(e) for e in events], source="e")


def rechained(lines: Iterable[str]) -> list[AuditEvent]:
    """The events of JSON lines, their hash chains computed again."""
    events: list[AuditEvent] = []
    prev: dict[str, str] = {}
    for line in lines:
        event = AuditEvent.from_json(line)
        link = prev.get(event.session_id, GENESIS)
        digest = _digest(
            link,
            session_id=event.session_id,
            index=event.index,
            at=event.at,
            kind=event.kind,
            body=event.body,
        )
        events.append(attrs.evolve(event, prev=link, hash=digest))
        prev[event.session_id] = digest
    return events


async def test_an_export_that_was_changed_is_refused(tmp_path: Path) -> None:
    """A replay re-decides only the history that was recorded: a changed line is located."""
    from click.testing import CliRunner

    from multiverify._cli import create_cli

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY.to_dict()))
    _, events = await run_case(*CASES["fraud"])
    out = io.StringIO()
    AuditTrail.export_jsonl(events, out)
    lines = out.getvalue().splitlines()
    [verdict_line] = [n for n, line in enumerate(lines) if '"kind":"verdict"' in line]
    lines[verdict_line] = lines[verdict_line].replace(
        '"outcome":"rejected"', '"outcome":"approved"'
    )
    with pytest.raises(DatasetError) as info:
        parse_sessions(lines, source="e.jsonl")
    assert info.value.line == verdict_line + 1
    assert f"is broken at #{verdict_line}: its content does not match its hash" in (
        info.value.message
    )
    # A dropped event breaks the chain of the one after it.
    with pytest.raises(DatasetError) as info:
        parse_sessions(lines[:2] + lines[3:], source="e.jsonl")
    assert info.value.line == 3
    assert "expected index 2, found 3" in info.value.message
    # A line without its hash, or with a time that is not one.
    first = json.loads(lines[0])
    for key, value, field in (("hash", None, "hash"), ("at", "soon", "at")):
        broken = [json.dumps({**first, key: value}), *lines[1:]]
        with pytest.raises(DatasetError) as info:
            parse_sessions(broken, source="e.jsonl")
        assert (info.value.line, info.value.field) == (1, field)
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        create_cli(),
        ["simulate", "--policy", str(policy_file), "--sessions", str(path)],
    )
    assert result.exit_code == 1
    assert f"line {verdict_line + 1}: the audit chain of session" in result.stderr


async def test_the_replay_check_in_the_terminal_and_html(tmp_path: Path) -> None:
    """Verdicts recorded under the policy are checked; one that differs is named."""
    from click.testing import CliRunner

    from multiverify._cli import create_cli
    from multiverify.backtest import render_html

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY.to_dict()))
    path = tmp_path / "export.jsonl"
    with path.open("w") as out:
        for case in ("all pass", "fraud"):
            _, events = await run_case(*CASES[case])
            AuditTrail.export_jsonl(events, out)
    lines = path.read_text().splitlines()
    # A history whose recorded verdict this policy does not give (recorded by
    # an older core, say), hash-chained like any export.
    changed = tmp_path / "changed.jsonl"
    with changed.open("w") as out:
        AuditTrail.export_jsonl(
            rechained(
                line.replace('"outcome":"rejected"', '"outcome":"approved"')
                for line in lines
            ),
            out,
        )
    runner = CliRunner()
    ok = runner.invoke(
        create_cli(),
        ["simulate", "--policy", str(policy_file), "--sessions", str(path)],
    )
    assert ok.exit_code == 0, ok.output
    assert (
        "Replay check (policy): 2 of 2 verdicts recorded under this policy" in ok.stdout
    )
    bad = runner.invoke(
        create_cli(),
        ["simulate", "--policy", str(policy_file), "--sessions", str(changed)],
    )
    report = simulate_file(POLICY, changed)
    [differs] = report.policy.recorded.disagree
    assert "Replay check (policy): 1 of 2 verdicts" in bad.stdout
    assert f"differ: {differs}" in bad.stdout
    assert f"they differ for {differs}" in render_html(report)
