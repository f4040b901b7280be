"""Tests for explaining a policy in plain words."""

from __future__ import annotations

from pathlib import Path

from multiverify import Outcome
from multiverify.policy import (
    Fallback,
    Policy,
    RetrySettings,
    Rule,
    Step,
    explain_policy,
    load_policy,
)

DATA = Path(__file__).parent / "data"


class TestExplainPolicy:
    def test_consumer_loan(self) -> None:
        """The example policy reads as its steps, rules, default and deadline."""
        policy = load_policy(DATA / "consumer-loan.toml")
        assert explain_policy(policy) == "\n".join(
            [
                f"Policy consumer-loan, version 2026-11-28 (hash {policy.hash[:12]})",
                "",
                "Steps:",
                (
                    "  1. bureau — credit_bureau; starts at once; times out after 10s; "
                    "tries up to 3 times, waiting 100ms to 2s between tries"
                ),
                (
                    "  2. call — phone_call; after bureau; only when application.amount > 2000; "
                    "if it ends failed or timeout, video starts"
                ),
                "  3. video — video_sign; only as the fallback of call",
                "",
                "Rules, in order; the first that holds decides:",
                (
                    "  1. rejected when 'fraud_alert' in steps.bureau.signals "
                    "(reason bureau.fraud_alert)"
                ),
                "Otherwise: review, once every step has ended.",
                "Score: the mean of the step scores.",
                "Deadline: 30m after the start, then expired.",
            ]
        )

    def test_everything_else(self) -> None:
        """Providers, options, optional steps, retries, messages and a score are told."""
        policy = Policy(
            name="p",
            version="2",
            default=Outcome.APPROVED,
            score="steps.sms.score * 1.0",
            steps=[
                Step(
                    id="bureau",
                    channel="credit_bureau",
                    retry=RetrySettings(attempts=1),
                ),
                Step(
                    id="sms",
                    channel="sms_code",
                    retry=RetrySettings(
                        attempts=4, wait_max="10s", wait_jitter=1, timeout="1m"
                    ),
                    providers=["twilio", "vonage", "aliyun"],
                    fallback=Fallback(step="call"),
                    optional=True,
                    options={"length": 6, "ttl": "5m"},
                ),
                Step(id="call", channel="phone_call", after=["bureau", "sms"]),
            ],
            rules=[
                Rule(
                    outcome=Outcome.REJECTED,
                    when="'fraud_alert' in steps.bureau.signals",
                    reason="bureau.fraud_alert",
                    message="the bureau reports fraud",
                )
            ],
        )
        lines = explain_policy(policy).splitlines()
        assert lines[3] == "  1. bureau — credit_bureau; starts at once; no retries"
        assert lines[4] == (
            "  2. sms — sms_code; starts at once; tries up to 4 times, waiting 100ms "
            "to 10s between tries plus up to 1s, 1m in all; providers twilio, vonage "
            "then aliyun; if it ends failed, error or timeout, call starts; optional: "
            "the default outcome does not wait for it; options length=6, ttl='5m'"
        )
        assert lines[5] == (
            "  3. call — phone_call; only as the fallback of sms; after bureau and sms"
        )
        assert lines[8] == (
            "  1. rejected when 'fraud_alert' in steps.bureau.signals "
            "(reason bureau.fraud_alert): the bureau reports fraud"
        )
        assert lines[9:] == [
            "Otherwise: approved, once every step that is not optional has ended.",
            "Score: steps.sms.score * 1.0",
            "Deadline: none.",
        ]

    def test_no_rules(self) -> None:
        """A policy without rules says so."""
        policy = Policy(name="p", version="1", steps=[Step(id="a", channel="sms_code")])
        assert "Rules: none." in explain_policy(policy).splitlines()

    def test_price(self) -> None:
        """A priced step says what one attempt costs."""
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="a", channel="sms_code", price=0.05)],
        )
        assert explain_policy(policy).splitlines()[3] == (
            "  1. a — sms_code; starts at once; costs 0.05 per attempt"
        )
