"""Tests for backtests: a small, hand-checked dataset, every number of the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from multiverify import ChannelResult, Outcome
from multiverify.backtest import (
    Plan,
    RecordedSession,
    RecordedStep,
    load_labels,
    load_sessions,
    parse_labels,
    parse_sessions,
    replay,
    simulate,
    simulate_file,
)
from multiverify.backtest._simulate import _start_worker, _work
from multiverify.exceptions import DatasetError
from multiverify.policy import parse_policy

NEW = """
name = "loan"
version = "2"
deadline = "30m"
default = "review"

[[steps]]
id = "bureau"
channel = "credit_bureau"
timeout = "10s"
price = 0.5

[[steps]]
id = "sms"
channel = "sms_code"
timeout = "60s"
price = 0.1

[[steps]]
id = "call"
channel = "phone_call"
after = ["bureau"]
when = "application.amount > 1000.0"
timeout = "5m"
price = 1.0

[[rules]]
outcome = "rejected"
when = "'fraud_alert' in steps.bureau.signals"
reason = "fraud"

[[rules]]
outcome = "review"
when = "steps.call.status == 'failed'"
reason = "call.failed"

[[rules]]
outcome = "approved"
when = "steps.bureau.status == 'passed' && steps.sms.status == 'passed' && steps.call.status in ['passed', 'skipped']"
reason = "ok"
"""

OLD = """
name = "loan"
version = "1"
deadline = "30m"
default = "review"

[[steps]]
id = "bureau"
channel = "credit_bureau"
timeout = "10s"
price = 0.5

[[steps]]
id = "sms"
channel = "sms_code"
timeout = "60s"
price = 0.1

[[rules]]
outcome = "rejected"
when = "'fraud_alert' in steps.bureau.signals"
reason = "fraud"

[[rules]]
outcome = "approved"
when = "steps.bureau.status == 'passed' && steps.sms.status == 'passed'"
reason = "ok"
"""

BUREAU_OK = {
    "channel": "credit_bureau",
    "status": "passed",
    "signals": ["identity_match"],
    "score": 0.9,
    "duration": "1s",
}
SMS_OK = {
    "channel": "sms_code",
    "status": "passed",
    "signals": ["code_verified"],
    "duration": "30s",
}
CALL_OK = {
    "channel": "phone_call",
    "status": "passed",
    "signals": ["intent_confirmed"],
    "duration": "120s",
}


def record(session_id: str, amount: float, **steps: dict[str, Any]) -> str:
    return json.dumps(
        {
            "session_id": session_id,
            "created_at": "2026-11-02T08:00:00+00:00",
            "facts": {"application": {"amount": amount}},
            "steps": steps,
        }
    )


# Hand-checked: what each policy does with each session, and why.
#  s1 small loan: NEW skips the call -> approved (0.6); OLD approved (0.6)
#  s2 call passed: NEW approved (1.6); OLD approved (0.6)
#  s3 no call recorded: NEW needs it -> missing evidence (1.6); OLD approved
#  s4 fraud alert, SMS cancelled: both reject at once; the SMS was not needed
#  s5 call failed: NEW review (1.6); OLD approved
#  s6 SMS timed out after 60s: both time it out too -> default review
LINES = [
    record("s1", 500, bureau=BUREAU_OK, sms=SMS_OK),
    record("s2", 5000, bureau=BUREAU_OK, sms=SMS_OK, call=CALL_OK),
    record("s3", 5000, bureau=BUREAU_OK, sms=SMS_OK),
    record(
        "s4",
        5000,
        bureau={
            "channel": "credit_bureau",
            "status": "failed",
            "signals": ["fraud_alert"],
            "duration": "1s",
        },
    ),
    "",
    record(
        "s5",
        2000,
        bureau=BUREAU_OK,
        sms=SMS_OK,
        call={**CALL_OK, "status": "failed", "signals": ["no_answer"]},
    ),
    record(
        "s6",
        2000,
        bureau=BUREAU_OK,
        sms={"channel": "sms_code", "status": "timeout", "duration": "60s"},
        call=CALL_OK,
    ),
]
LABELS = "session_id,label\ns1,good\ns2,good\ns3,good\ns4,fraud\ns5,default\ns9,good\n"


@pytest.fixture
def sessions_file(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.jsonl"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def policies() -> tuple[Any, Any]:
    return parse_policy(NEW, format="toml"), parse_policy(OLD, format="toml")


class TestHandChecked:
    def test_every_number(self, sessions_file: Path) -> None:
        """Outcomes, reasons, rates, cost, review load, missing evidence, labels and changes."""
        new, old = policies()
        labels = parse_labels(LABELS.splitlines())
        report = simulate_file(
            new,
            sessions_file,
            baseline=old,
            labels=labels,
            review_minutes=15,
            workers=1,
        )
        data = report.to_json()
        assert data["sessions"] == 6
        policy = data["policy"]
        assert policy["outcomes"] == {
            "approved": 2,
            "review": 2,
            "rejected": 1,
            "expired": 0,
            "missing_evidence": 1,
        }
        assert policy["rates"] == {
            "approval": 2 / 6,
            "review": 2 / 6,
            "rejection": 1 / 6,
        }
        assert policy["reasons"] == {
            "ok": 2,
            "fraud": 1,
            "missing_evidence": 1,
            "call.failed": 1,
            "policy.default": 1,
        }
        assert policy["cost"]["steps"] == [
            {
                "step_id": "bureau",
                "channel": "credit_bureau",
                "price": 0.5,
                "sessions": 6,
                "attempts": 6,
                "cost": 3.0,
            },
            {
                "step_id": "sms",
                "channel": "sms_code",
                "price": 0.1,
                "sessions": 6,
                "attempts": 6,
                "cost": pytest.approx(0.6),
            },
            {
                "step_id": "call",
                "channel": "phone_call",
                "price": 1.0,
                "sessions": 4,
                "attempts": 4,
                "cost": 4.0,
            },
        ]
        assert policy["cost"]["total"] == pytest.approx(7.6)
        assert policy["cost"]["per_session"] == pytest.approx(7.6 / 6)
        assert policy["cost"]["unpriced"] == []
        assert policy["review"] == {"sessions": 2, "share": 2 / 6, "hours": 0.5}
        assert policy["missing_evidence"] == {
            "sessions": 1,
            "steps": {"call": 1},
            "not_needed": 1,
            "undecided": [
                {
                    "session_id": "s3",
                    "steps": {"call": "no phone_call result in the recording"},
                }
            ],
        }
        assert policy["recorded"] == {"sessions": 0, "agree": 0, "disagree": []}
        assert policy["labels"] == {
            "labelled": 5,
            "unlabelled": 1,
            "matrix": {
                "good": {
                    "approved": 2,
                    "review": 0,
                    "rejected": 0,
                    "expired": 0,
                    "missing_evidence": 1,
                },
                "default": {
                    "approved": 0,
                    "review": 1,
                    "rejected": 0,
                    "expired": 0,
                    "missing_evidence": 0,
                },
                "fraud": {
                    "approved": 0,
                    "review": 0,
                    "rejected": 1,
                    "expired": 0,
                    "missing_evidence": 0,
                },
            },
            "rates": {
                "good": {"approval": 2 / 3, "review": 0.0, "rejection": 0.0},
                "default": {"approval": 0.0, "review": 1.0, "rejection": 0.0},
                "fraud": {"approval": 0.0, "review": 0.0, "rejection": 1.0},
            },
        }
        baseline = data["baseline"]
        assert baseline["version"] == "1"
        assert baseline["outcomes"] == {
            "approved": 4,
            "review": 1,
            "rejected": 1,
            "expired": 0,
            "missing_evidence": 0,
        }
        assert baseline["cost"]["total"] == pytest.approx(3.6)
        assert baseline["review"] == {"sessions": 1, "share": 1 / 6, "hours": 0.25}
        assert baseline["missing_evidence"]["not_needed"] == 1
        assert data["unmatched_labels"] == 1
        assert data["changed"] == 2
        assert [
            (
                c["session_id"],
                c["before"],
                c["after"],
                c["before_reason"],
                c["after_reason"],
                c["label"],
            )
            for c in data["changes"]
        ] == [
            ("s3", "approved", "missing_evidence", "ok", "missing_evidence", "good"),
            ("s5", "approved", "review", "ok", "call.failed", "default"),
        ]
        s5 = data["changes"][1]
        assert "Reason ok" in s5["before_explanation"]
        assert (
            "call [phone_call]: done, failed; signals: no_answer"
            in s5["after_explanation"]
        )
        assert "Reason call.failed" in s5["after_explanation"]
        s3 = data["changes"][0]["after_explanation"]
        assert s3.startswith(
            "No verdict: the recording lacks evidence the policy needs."
        )
        assert "  - call: no phone_call result in the recording" in s3
        assert "  - call [phone_call]: running" in s3
        shifts = data["shifts"]
        assert shifts["approved"] == {
            "approved": 2,
            "review": 1,
            "rejected": 0,
            "expired": 0,
            "missing_evidence": 1,
        }
        assert shifts["rejected"]["rejected"] == 1
        assert shifts["review"]["review"] == 1
        assert sum(sum(row.values()) for row in shifts.values()) == 6

    def test_in_process_and_from_records_agree(self, sessions_file: Path) -> None:
        """``simulate`` over parsed sessions gives the report ``simulate_file`` gives."""
        new, old = policies()
        recorded = parse_sessions(
            sessions_file.read_text().splitlines(), source=str(sessions_file)
        )
        direct = simulate(new, recorded, baseline=old, source=str(sessions_file))
        from_file = simulate_file(new, sessions_file, baseline=old, workers=1)
        assert direct.to_json() == from_file.to_json()

    def test_without_baseline_or_labels(self, sessions_file: Path) -> None:
        """A report without a baseline has no changes; without labels no matrix."""
        new, _ = policies()
        data = simulate_file(new, sessions_file).to_json()
        assert data["baseline"] is None
        assert "changes" not in data
        assert "labels" not in data["policy"]
        assert data["policy"]["review"]["hours"] is None

    def test_progress(self, sessions_file: Path) -> None:
        """Progress is reported from 0 to the number of sessions."""
        seen: list[tuple[int, int]] = []
        simulate_file(
            policies()[0],
            sessions_file,
            workers=1,
            on_progress=lambda d, t: seen.append((d, t)),
        )
        assert seen == [(0, 6), (6, 6)]

    def test_worker_processes_agree(self, sessions_file: Path) -> None:
        """Two worker processes give the same report as one."""
        new, old = policies()
        one = simulate_file(new, sessions_file, baseline=old, workers=1).to_json()
        two = simulate_file(new, sessions_file, baseline=old, workers=2).to_json()
        assert one == two

    def test_worker_functions(self, sessions_file: Path) -> None:
        """What a worker process runs, run here: rebuilt policies, same rows."""
        new, old = policies()
        _start_worker(
            (new.to_dict(), None, {}, new.hash), (old.to_dict(), None, {}, old.hash)
        )
        lines = [(n, t) for n, t in enumerate(LINES, start=1) if t]
        rows = _work(("dataset", lines), "x")
        assert [row.column for row, _, _ in rows] == [
            "approved",
            "approved",
            "missing_evidence",
            "rejected",
            "review",
            "review",
        ]
        assert len(rows) == 6

    def test_unpriced_steps(self, sessions_file: Path) -> None:
        """A step without a price counts 0 and is named."""
        new = parse_policy(NEW.replace("price = 1.0\n", ""), format="toml")
        cost = simulate_file(new, sessions_file).policy.cost
        assert cost.unpriced == ("call",)
        assert cost.total == pytest.approx(3.6)

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file gives an empty report."""
        path = tmp_path / "empty.jsonl"
        path.write_text("\n")
        report = simulate_file(policies()[0], path)
        assert report.sessions == 0
        assert report.policy.cost.per_session == 0
        assert report.policy.rates() == {
            "approval": 0.0,
            "review": 0.0,
            "rejection": 0.0,
        }
        assert parse_sessions([]) == []


def session(**steps: tuple[str, str, float]) -> RecordedSession:
    return RecordedSession(
        session_id="r1",
        facts={"applicant": {}, "application": {"amount": 5000.0}},
        steps={
            step_id: RecordedStep(
                step_id=step_id,
                channel=channel,
                duration=duration,
                result=ChannelResult(status=status),
            )
            for step_id, (channel, status, duration) in steps.items()
        },
    )


class TestReplay:
    def test_a_slower_result_times_out_under_a_shorter_timeout(self) -> None:
        """A call that took 8 minutes times out under a 5-minute timeout."""
        new, _ = policies()
        result = replay(
            new,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "passed", 30),
                call=("phone_call", "passed", 480),
            ),
        )
        assert result.verdict is not None
        summary = {s.step_id: s for s in result.verdict.steps}
        assert summary["call"].result is not None
        assert summary["call"].result.status.value == "timeout"
        assert result.outcome is Outcome.REVIEW  # no rule holds: the default

    def test_a_recorded_timeout_the_policy_would_wait_longer_for_is_missing(
        self,
    ) -> None:
        """A recording that timed out after 60s says nothing about a 5-minute wait."""
        new = parse_policy(
            NEW.replace('timeout = "60s"', 'timeout = "5m"'), format="toml"
        )
        result = replay(
            new,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "timeout", 60),
                call=("phone_call", "passed", 100),
            ),
        )
        assert result.outcome is None
        assert result.missing == {
            "sms": "timed out after 60s in the recording; the policy waits 300s"
        }
        no_timeout = parse_policy(NEW.replace('timeout = "60s"\n', ""), format="toml")
        again = replay(
            no_timeout,
            session(
                bureau=("credit_bureau", "passed", 1), sms=("sms_code", "timeout", 60)
            ),
        )
        assert again.missing["sms"].endswith("the policy no timeout")

    def test_a_cancelled_or_other_channel_step_is_missing(self) -> None:
        """A cancelled result is no evidence; nor is a result of another channel."""
        new, _ = policies()
        result = replay(
            new,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "cancelled", 10),
                call=("video_sign", "passed", 100),
            ),
        )
        assert result.outcome is None
        assert result.missing == {
            "sms": "cancelled in the recording before it ended",
            "call": "recorded on channel video_sign, the policy runs phone_call",
        }
        assert "Steps when the replay stopped:" in result.explain()

    def test_an_error_built_without_its_provider_errors_is_a_result(self) -> None:
        """A Python-built error result without the errors behind it replays as it is."""
        new, _ = policies()
        result = replay(
            new,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "error", 5),
                call=("phone_call", "passed", 100),
            ),
        )
        assert result.outcome is Outcome.REVIEW
        assert result.verdict is not None
        sms = next(s for s in result.verdict.steps if s.step_id == "sms")
        assert sms.result is not None
        assert sms.result.status.value == "error"
        assert not result.missing

    def test_a_policy_with_review_cases(self) -> None:
        """With a [review] table the automatic verdict of review is the simulated one."""
        reviewed = parse_policy(
            NEW.replace(
                'default = "review"\n', 'default = "review"\n[review]\nsla = "4h"\n'
            ),
            format="toml",
        )
        [recorded] = parse_sessions([LINES[5]])  # s5: the call failed
        result = replay(reviewed, recorded)
        assert result.outcome is Outcome.REVIEW
        assert result.reason == "call.failed"

    def test_matching_by_channel(self) -> None:
        """A policy step with a new id takes the one recorded step of its channel."""
        renamed = parse_policy(
            NEW.replace('id = "sms"', 'id = "otp"').replace("steps.sms.", "steps.otp."),
            format="toml",
        )
        result = replay(
            renamed,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "passed", 10),
                call=("phone_call", "passed", 100),
            ),
        )
        assert result.outcome is Outcome.APPROVED
        plan = Plan(renamed)
        steps = session(sms=("sms_code", "passed", 1)).steps
        assert plan.match(steps) == {"otp": "sms"}
        assert plan.match(steps) is plan.match(steps)  # cached by shape

    def test_a_missing_optional_step_cannot_decide_by_default(self) -> None:
        """The default outcome with a step still missing would be a guess."""
        policy = parse_policy(
            NEW.replace('timeout = "5m"', 'timeout = "5m"\noptional = true')
            .replace("steps.call.status in ['passed', 'skipped']", "true")
            .replace("steps.call.status == 'failed'", "steps.sms.status == 'failed'"),
            format="toml",
        )
        result = replay(
            policy,
            session(
                bureau=("credit_bureau", "failed", 1), sms=("sms_code", "timeout", 60)
            ),
        )
        assert result.outcome is None
        assert set(result.missing) == {"call"}

    def test_without_a_deadline_a_missing_step_leaves_the_session_waiting(self) -> None:
        """No deadline, no timer: the replay ends undecided once nothing is due."""
        policy = parse_policy(NEW.replace('deadline = "30m"\n', ""), format="toml")
        result = replay(policy, session(bureau=("credit_bureau", "passed", 1)))
        assert result.outcome is None
        assert set(result.missing) == {"sms", "call"}
        assert result.attempts == {"bureau": 1, "sms": 1, "call": 1}

    def test_the_deadline_with_every_step_answered(self) -> None:
        """A step slower than the deadline expires the session: the core's deadline."""
        new, _ = policies()
        result = replay(
            new,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "passed", 3000),
                call=("phone_call", "passed", 10),
            ),
        )
        # the SMS times out at 60s first: no rule holds, the default decides
        assert result.outcome is Outcome.REVIEW
        long_sms = parse_policy(NEW.replace('timeout = "60s"\n', ""), format="toml")
        expired = replay(
            long_sms,
            session(
                bureau=("credit_bureau", "passed", 1),
                sms=("sms_code", "passed", 3000),
                call=("phone_call", "passed", 10),
            ),
        )
        assert expired.outcome is Outcome.EXPIRED
        assert expired.verdict is not None
        assert expired.verdict.decided_by == "deadline"

    def test_explain_mentions_steps_not_needed(self) -> None:
        """A decided session that lacked an unneeded step says so."""
        new, _ = policies()
        [recorded] = parse_sessions([LINES[3]])
        result = replay(new, recorded)
        assert result.outcome is Outcome.REJECTED
        assert result.reason == "fraud"
        assert result.explain().endswith(
            "Not needed, and not in the recording: sms (no sms_code result in the recording)"
        )


class TestBrokenInput:
    def test_bad_json_line_names_its_line(self, tmp_path: Path) -> None:
        """A line that is not JSON is reported with its number."""
        path = tmp_path / "s.jsonl"
        path.write_text(LINES[0] + "\n\n" + '{"session_id": "x", "steps": {}\n')
        with pytest.raises(DatasetError) as info:
            simulate_file(policies()[0], path)
        assert info.value.line == 3
        assert info.value.source == str(path)
        assert info.value.message.startswith(f"{path}: line 3: not JSON: ")

    @pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
    @pytest.mark.parametrize(
        "read",
        [
            pytest.param(
                lambda path: simulate_file(policies()[0], path), id="simulate"
            ),
            pytest.param(load_sessions, id="sessions"),
            pytest.param(load_labels, id="labels"),
        ],
    )
    def test_a_file_that_is_not_utf8_names_its_line_and_byte(
        self, tmp_path: Path, read: Callable[[Path], object], bom: bytes
    ) -> None:
        """A byte that is not UTF-8 is a DatasetError with its line and byte."""
        path = tmp_path / "latin1.txt"
        path.write_bytes(bom + LINES[0].encode() + b'\n{"session_id": "caf\xe9"}\n')
        with pytest.raises(DatasetError) as info:
            read(path)
        assert (info.value.source, info.value.line) == (str(path), 2)
        assert info.value.message == (
            f"{path}: line 2: not UTF-8 text: invalid continuation byte at byte 20"
        )

    def test_json_nested_too_deeply_names_its_line(self, tmp_path: Path) -> None:
        """A line nested deeper than the JSON decoder can follow is a located error."""
        path = tmp_path / "deep.jsonl"
        path.write_text(LINES[0] + "\n" + "[" * 100_000 + "\n")
        with pytest.raises(DatasetError) as info:
            load_sessions(path)
        assert info.value.line == 2
        assert info.value.message == f"{path}: line 2: not JSON: nested too deeply"

    def test_bad_line_in_a_worker_names_its_line(self, tmp_path: Path) -> None:
        """The first bad line is reported from worker processes too."""
        path = tmp_path / "s.jsonl"
        body = [record(f"s{i}", 500, bureau=BUREAU_OK, sms=SMS_OK) for i in range(5)]
        body[3] = body[3].replace('"passed"', '"pased"', 1)
        path.write_text("\n".join(body) + "\n")
        with pytest.raises(DatasetError) as info:
            simulate_file(policies()[0], path, workers=2)
        assert info.value.line == 4
        assert info.value.field == "steps.bureau.status"

    @pytest.mark.parametrize(
        ("line", "field", "message"),
        [
            ("[1]", "", "expected an object, got a list"),
            ('{"steps": {}}', "session_id", "missing required key"),
            ('{"session_id": "a"}', "steps", "missing required key"),
            ('{"session_id": " ", "steps": {}}', "session_id", "must not be empty"),
            (
                '{"session_id": 7, "steps": {}}',
                "session_id",
                "expected a string, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {}, "label": "x"}',
                "label",
                "unknown key; known keys: created_at, facts, session_id, steps",
            ),
            (
                '{"session_id": "a", "steps": [], "facts": {}}',
                "steps",
                "expected an object, got a list",
            ),
            (
                '{"session_id": "a", "steps": {}, "created_at": "soon"}',
                "created_at",
                "not an ISO 8601 date-time: 'soon'",
            ),
            (
                '{"session_id": "a", "steps": {}, "facts": {"loan": {}}}',
                "facts.loan",
                "unknown key; known keys: applicant, application",
            ),
            (
                '{"session_id": "a", "steps": {}, "facts": {"applicant": 3}}',
                "facts.applicant",
                "expected an object, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {"b": 1}}',
                "steps.b",
                "expected an object, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"status": "passed"}}}',
                "steps.b.channel",
                "missing required key",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": 1, "status": "passed"}}}',
                "steps.b.channel",
                "expected a string, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code"}}}',
                "steps.b.status",
                "missing required key",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "ok"}}}',
                "steps.b.status",
                "'ok' is not a result status (one of cancelled, error, failed, inconclusive, passed, timeout)",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "signals": "x"}}}',
                "steps.b.signals",
                "expected a list, got a string",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "signals": [1]}}}',
                "steps.b.signals[0]",
                "expected a string, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "score": "high"}}}',
                "steps.b.score",
                "expected a number, got a string",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "duration": "soon"}}}',
                "steps.b.duration",
                "not a duration: 'soon' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "duration": true}}}',
                "steps.b.duration",
                "expected a duration such as '30s', got a boolean",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "timeout"}}}',
                "steps.b.duration",
                "a timeout needs the time it waited",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "attempts": 0}}}',
                "steps.b.attempts",
                "expected an integer of at least 1, got 0",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "provider": 5}}}',
                "steps.b.provider",
                "expected a string, got an integer",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "detail": null}}}',
                "steps.b.detail",
                "expected a string, got null",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "facts": []}}}',
                "steps.b.facts",
                "expected an object, got a list",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "error", "failover": "no"}}}',
                "steps.b.failover",
                "expected true or false, got a string",
            ),
            (
                '{"session_id": "a", "steps": {"b": {"channel": "sms_code", "status": "passed", "when": 1}}}',
                "steps.b.when",
                "unknown key; known keys: attempts, channel, detail, duration, facts, failover, provider, score, signals, status",
            ),
        ],
    )
    def test_dataset_record_problems(self, line: str, field: str, message: str) -> None:
        """Each wrong field is named with its path and line."""
        with pytest.raises(DatasetError) as info:
            parse_sessions([LINES[0], line], source="d.jsonl")
        assert (info.value.line, info.value.field) == (2, field)
        where = f"{field}: " if field else ""
        assert info.value.message == f"d.jsonl: line 2: {where}{message}"

    def test_a_sound_record_with_every_field(self) -> None:
        """Every optional field of a step is read."""
        [recorded] = parse_sessions(
            [
                json.dumps(
                    {
                        "session_id": "a",
                        "created_at": "2026-11-02T08:00:00",
                        "steps": {
                            "b": {
                                "channel": "sms_code",
                                "status": "passed",
                                "score": 1,
                                "attempts": 2,
                                "provider": "twilio",
                                "detail": "typed",
                                "facts": {"sends": 1},
                                "duration": 12,
                            }
                        },
                    }
                )
            ]
        )
        step = recorded.steps["b"]
        assert recorded.created_at.tzinfo is UTC
        assert recorded.facts == {"applicant": {}, "application": {}}
        assert (step.duration, step.result.score, step.result.attempts) == (
            12.0,
            1.0,
            2,
        )
        assert (step.result.provider, step.result.detail, dict(step.result.facts)) == (
            "twilio",
            "typed",
            {"sends": 1},
        )

    def test_duplicate_session_ids(self, tmp_path: Path) -> None:
        """A session id on two lines is refused at the second."""
        with pytest.raises(DatasetError) as info:
            parse_sessions([LINES[0], LINES[1], LINES[0]], source="d")
        assert info.value.line == 3
        assert (
            info.value.message
            == "d: line 3: session_id: session 's1' already appears on line 1"
        )
        path = tmp_path / "dup.jsonl"
        path.write_text("\n".join([LINES[0], LINES[0]]))
        with pytest.raises(
            DatasetError,
            match="line 2: session_id: session 's1' already appears on line 1",
        ):
            simulate_file(policies()[0], path)


class TestLabels:
    def test_labels(self) -> None:
        """Rows of session_id,label; the header and blank rows are skipped."""
        assert parse_labels(["session_id,label", "", "a, fraud ", "b,good"]) == {
            "a": "fraud",
            "b": "good",
        }
        assert parse_labels(["a,default"]) == {"a": "default"}

    @pytest.mark.parametrize(
        ("lines", "line", "field", "message"),
        [
            (["a,good,x"], 1, "", "expected 2 fields (session_id,label), got 3"),
            (
                ["session_id,label", "a"],
                2,
                "",
                "expected 2 fields (session_id,label), got 1",
            ),
            (["a,"], 1, "label", "must not be empty"),
            ([",good"], 1, "session_id", "must not be empty"),
            (
                ["a,good", "b,good", "a,fraud"],
                3,
                "session_id",
                "session 'a' is already labelled on line 1",
            ),
            (['"a,good'], 1, "", "not CSV: unexpected end of data"),
        ],
    )
    def test_bad_rows(
        self, lines: list[str], line: int, field: str, message: str
    ) -> None:
        """A bad row names its line."""
        with pytest.raises(DatasetError) as info:
            parse_labels(lines, source="labels.csv")
        assert (info.value.line, info.value.field) == (line, field)
        where = f"{field}: " if field else ""
        assert info.value.message == f"labels.csv: line {line}: {where}{message}"
