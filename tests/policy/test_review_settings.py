"""The ``[review]`` table of a policy: read, validated with located errors, hashed."""

from __future__ import annotations

import pytest

from multiverify import Outcome
from multiverify.exceptions import PolicyError
from multiverify.policy import (
    Policy,
    ReviewSettings,
    Step,
    explain_policy,
    parse_policy,
    policy_from_dict,
)

BASE = """\
name = "loans"
version = "1"

[[steps]]
id = "bureau"
channel = "credit_bureau"
"""

REVIEWED = (
    BASE
    + """
[review]
priority = 2
sla = "4h"
escalate_by = 5
fallback_after = "1d"
fallback = "rejected"
lease = "10m"
approve_reasons = ["identity_confirmed"]
reject_reasons = ["fraud_suspected"]

[[review.evidence]]
id = "video"
channel = "video_sign"
timeout = "1h"
"""
)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, format="toml", source="p.toml")
    return {problem.path: problem.message for problem in caught.value.problems}


class TestReading:
    def test_the_table_is_read(self) -> None:
        """Every key of the table reaches ReviewSettings, durations in seconds."""
        policy = parse_policy(REVIEWED, format="toml")
        review = policy.review
        assert review is not None
        assert review.priority == 2
        assert review.sla == 4 * 3600
        assert review.escalate_by == 5
        assert review.fallback_after == 86400
        assert review.fallback is Outcome.REJECTED
        assert review.lease == 600
        assert review.reasons_for(Outcome.APPROVED) == ("identity_confirmed",)
        assert review.reasons_for(Outcome.REJECTED) == ("fraud_suspected",)
        assert review.evidence_step("video") == Step(
            id="video", channel="video_sign", timeout="1h"
        )
        assert review.evidence_step("call") is None
        assert policy.step("video").channel == "video_sign"
        assert [step.id for step in policy.all_steps] == ["bureau", "video"]
        assert [step.id for step in policy.steps] == ["bureau"]

    def test_round_trips_with_the_same_hash(self) -> None:
        """to_dict and back keeps the hash; the table changes the hash."""
        policy = parse_policy(REVIEWED, format="toml")
        again = policy_from_dict(policy.to_dict())
        assert again.hash == policy.hash
        assert again.review == policy.review
        assert parse_policy(BASE, format="toml").hash != policy.hash

    def test_without_the_table_nothing_changes(self) -> None:
        """A policy without [review] writes no review key (its hash is as before)."""
        policy = parse_policy(BASE, format="toml")
        assert policy.review is None
        assert "review" not in policy.to_dict()
        assert policy.all_steps == policy.steps

    def test_defaults(self) -> None:
        """An empty table: no SLA, no fallback limit, reject on fallback, 15 minute leases."""
        review = parse_policy(BASE + "\n[review]\n", format="toml").review
        assert review == ReviewSettings()
        assert review.sla is None
        assert review.fallback_after is None
        assert review.lease == 900


class TestLocatedErrors:
    def test_structural_mistakes(self) -> None:
        """Wrong types and unknown keys are located inside the table."""
        found = problems(
            BASE
            + """
[review]
sla = "four hours"
priority = "high"
fallback = "maybe"
escalate = 3
approve_reasons = "ok"
"""
        )
        assert "not a duration" in found["review.sla"]
        assert found["review.priority"] == "expected an integer, got a string"
        assert "is not an outcome" in found["review.fallback"]
        assert "did you mean 'escalate_by'" in found["review.escalate"]
        assert found["review.approve_reasons"] == "expected a list, got a string"

    def test_semantic_mistakes(self) -> None:
        """Limits out of order, a fallback of review, bad reason codes are located."""
        found = problems(
            BASE
            + """
[review]
sla = "4h"
fallback_after = "2h"
fallback = "review"
escalate_by = -1
lease = 0
approve_reasons = ["Looks Good", "ok", "ok"]
"""
        )
        assert "must be longer than sla (4h)" in found["review.fallback_after"]
        assert "cannot fall back to review" in found["review.fallback"]
        assert "must not be negative" in found["review.escalate_by"]
        assert "longer than zero" in found["review.lease"]
        assert "is not a reason code" in found["review.approve_reasons[0]"]
        assert "duplicate reason code" in found["review.approve_reasons[2]"]

    def test_zero_limits(self) -> None:
        """An SLA or fallback limit of zero is refused."""
        found = problems(BASE + '\n[review]\nsla = 0\nfallback_after = "0s"\n')
        assert "longer than zero" in found["review.sla"]
        assert "longer than zero" in found["review.fallback_after"]

    def test_evidence_step_mistakes(self) -> None:
        """Evidence steps: ids unique across the policy, known channels, no conditions."""
        found = problems(
            BASE
            + """
[[review.evidence]]
id = "bureau"
channel = "credit_bureau"

[[review.evidence]]
id = "video"
channel = "selfie"
when = "true"
after = ["bureau"]

[[review.evidence]]
id = "video"
channel = "video_sign"
optional = true

[[review.evidence]]
id = "Bad"
channel = "video_sign"
fallback = { step = "bureau" }
"""
        )
        assert "is already steps[0]" in found["review.evidence[0].id"]
        assert "unknown channel 'selfie'" in found["review.evidence[1].channel"]
        assert "not allowed in an evidence step" in found["review.evidence[1].when"]
        assert "not allowed in an evidence step" in found["review.evidence[1].after"]
        assert "duplicate evidence step id" in found["review.evidence[2].id"]
        assert "not allowed" in found["review.evidence[2].optional"]
        assert "not a valid step id" in found["review.evidence[3].id"]
        assert "not allowed" in found["review.evidence[3].fallback"]

    def test_evidence_steps_are_not_rule_names(self) -> None:
        """Rules cannot read an evidence step: it runs only after the rules spoke."""
        found = problems(
            REVIEWED
            + """
[[rules]]
outcome = "approved"
when = "steps.video.status == 'passed'"
reason = "video.ok"
"""
        )
        assert "unknown step 'video'" in found["rules[0].when"]

    def test_check_channels_covers_evidence_steps(self) -> None:
        """A Verifier without the evidence step's channel hears where it is named."""
        policy = parse_policy(REVIEWED, format="toml")
        [problem] = policy.check_channels(["credit_bureau"])
        assert problem.path == "review.evidence[0].channel"

    def test_built_in_python(self) -> None:
        """A Policy built in Python validates the same way."""
        with pytest.raises(PolicyError) as caught:
            Policy(
                name="p",
                version="1",
                steps=[Step(id="bureau", channel="credit_bureau")],
                review=ReviewSettings(fallback="review"),
            )
        assert caught.value.problems[0].path == "review.fallback"

    @pytest.mark.parametrize(
        ("settings", "path", "message"),
        [
            (
                {"sla": "soon"},
                "review.sla",
                "not a duration: 'soon' (write it like '30s', '5m' or '1h30m')",
            ),
            ({"lease": -1}, "review.lease", "a duration must not be negative: -1"),
            (
                {"fallback_after": [1]},
                "review.fallback_after",
                "not a duration: [1]",
            ),
            (
                {"fallback": "reject"},
                "review.fallback",
                "'reject' is not an outcome (one of approved, expired, rejected, review)",
            ),
            ({"priority": "high"}, "review.priority", "expected an integer, got str"),
            (
                {"escalate_by": 1.5},
                "review.escalate_by",
                "expected an integer, got float",
            ),
            (
                {"approve_reasons": "ok"},
                "review.approve_reasons",
                "expected a list, got str",
            ),
            (
                {"reject_reasons": ["fraud", 7]},
                "review.reject_reasons[1]",
                "expected a string, got int",
            ),
            (
                {"evidence": [{"id": "video", "channel": "video_sign"}]},
                "review.evidence[0]",
                "expected a Step, got dict",
            ),
        ],
    )
    def test_bad_values_built_in_python_are_located(
        self, settings: dict[str, object], path: str, message: str
    ) -> None:
        """A bad value passed to ReviewSettings is a located PolicyError."""
        with pytest.raises(PolicyError) as caught:
            ReviewSettings(**settings)  # type: ignore[arg-type]
        assert [(p.path, p.message) for p in caught.value.problems] == [(path, message)]


class TestExplained:
    def test_policy_explain_describes_the_table(self) -> None:
        """explain_policy says who settles a verdict of review, how soon, with what."""
        text = explain_policy(parse_policy(REVIEWED, format="toml"))
        assert "Review: a verdict of review waits for a person" in text
        assert (
            "priority 2; escalates by 5 after 4h; becomes rejected after 1d "
            "undecided; claims last 10m." in text
        )
        assert "Reasons to approve: identity_confirmed." in text
        assert "Evidence on request: video — video_sign; times out after 1h" in text
        bare = explain_policy(
            parse_policy(BASE + "\n[review]\nlease = '5m'\n", format="toml")
        )
        assert "  priority 0; claims last 5m." in bare
        assert "Reasons to reject: any code." in bare
