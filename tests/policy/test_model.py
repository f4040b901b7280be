"""Tests for the policy model: values, validation messages, hashing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from multiverify import ChannelSpec, Outcome, PolicyRef, ResultStatus
from multiverify.exceptions import PolicyError
from multiverify.policy import Fallback, Policy, RetrySettings, Rule, Step
from multiverify.policy._model import as_timedelta


def make(**overrides: Any) -> Policy:
    """A small valid policy, with some settings replaced."""
    settings: dict[str, Any] = {
        "name": "loan",
        "version": "1",
        "steps": [
            Step(id="bureau", channel="credit_bureau"),
            Step(id="call", channel="phone_call", after=["bureau"]),
        ],
    }
    return Policy(**(settings | overrides))


def problems(**overrides: Any) -> list[tuple[str, str]]:
    """The located problems of an invalid policy."""
    with pytest.raises(PolicyError) as info:
        make(**overrides)
    return [(problem.path, problem.message) for problem in info.value.problems]


def rule(when: str, outcome: str = "rejected", reason: str = "r") -> Rule:
    return Rule(outcome=Outcome(outcome), when=when, reason=reason)


class TestValues:
    def test_retry_defaults(self) -> None:
        """Retry settings default to three tries with a short backoff."""
        retry = RetrySettings()
        assert (retry.attempts, retry.timeout, retry.wait_initial) == (3, None, 0.1)
        assert (retry.wait_max, retry.wait_jitter) == (5.0, 0.0)

    def test_retry_durations(self) -> None:
        """Durations are given as strings, numbers or timedeltas."""
        retry = RetrySettings(
            timeout="1m",
            wait_initial=timedelta(seconds=1),
            wait_max=2,
            wait_jitter="500ms",
        )
        assert (retry.timeout, retry.wait_initial, retry.wait_max) == (60.0, 1.0, 2.0)
        assert retry.wait_jitter == 0.5

    def test_retry_needs_one_attempt(self) -> None:
        """Zero attempts is refused at construction, as a located policy problem."""
        with pytest.raises(PolicyError) as info:
            RetrySettings(attempts=0)
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("retry.attempts", "must be at least 1, got 0")
        ]

    def test_fallback_statuses(self) -> None:
        """A fallback starts on failure, error or timeout unless told otherwise."""
        assert Fallback(step="video").on == frozenset(
            {ResultStatus.FAILED, ResultStatus.ERROR, ResultStatus.TIMEOUT}
        )
        assert Fallback(step="video", on=["cancelled"]).on == {ResultStatus.CANCELLED}

    def test_step_converts(self) -> None:
        """A step takes any iterables and a duration for its timeout."""
        step = Step(id="a", channel="sms_code", timeout="2m", providers=iter(["x"]))
        assert step.timeout == 120.0
        assert step.providers == ("x",)
        assert step.after == ()

    def test_step_with_options_is_hashable(self) -> None:
        """Options are a dict, yet a step (and a policy) can be hashed."""
        step = Step(id="a", channel="sms_code", options={"length": 6})
        assert hash(step) == hash(
            Step(id="a", channel="sms_code", options={"length": 7})
        )
        assert step != Step(id="a", channel="sms_code", options={"length": 7})
        assert isinstance(hash(make(steps=[step])), int)

    def test_rule_outcome_from_string(self) -> None:
        """A rule's outcome may be given by its value."""
        assert (
            Rule(outcome="approved", when="true", reason="ok").outcome
            is Outcome.APPROVED
        )

    def test_as_timedelta(self) -> None:
        """Seconds become a timedelta and None stays None."""
        assert as_timedelta(1.5) == timedelta(seconds=1.5)
        assert as_timedelta(None) is None


class TestPolicy:
    def test_defaults(self) -> None:
        """A policy reviews by default and expires at its deadline."""
        policy = make(deadline="30m")
        assert policy.default is Outcome.REVIEW
        assert policy.on_deadline is Outcome.EXPIRED
        assert policy.deadline == 1800.0
        assert policy.rules == ()

    def test_step_lookup(self) -> None:
        """Steps are found by id; an unknown id is a KeyError."""
        policy = make()
        assert policy.step("call").channel == "phone_call"
        with pytest.raises(KeyError):
            policy.step("nope")

    def test_fallback_targets(self) -> None:
        """Fallback targets are the steps started only as fallbacks."""
        policy = make(
            steps=[
                Step(id="call", channel="phone_call", fallback=Fallback(step="video")),
                Step(id="video", channel="video_sign"),
            ]
        )
        assert policy.fallback_targets == frozenset({"video"})

    def test_conditions_are_compiled(self) -> None:
        """Every condition of a valid policy is compiled once and kept."""
        policy = make(
            steps=[Step(id="a", channel="sms_code", when="application.amount > 1")],
            rules=[rule("steps.a.status == 'passed'")],
            score="steps.a.score",
        )
        assert policy.condition("application.amount > 1").evaluate(
            {"application": {"amount": 2}}
        )
        assert (
            policy.condition("steps.a.score").evaluate_number(
                {"steps": {"a": {"score": 0.5}}}
            )
            == 0.5
        )
        with pytest.raises(KeyError):
            policy.condition("true")

    def test_ref(self) -> None:
        """The reference carries name, version and hash."""
        policy = make()
        assert policy.ref == PolicyRef(name="loan", version="1", hash=policy.hash)

    def test_to_dict(self) -> None:
        """The document form lists only what differs from the defaults."""
        policy = make(
            deadline=90,
            on_deadline=Outcome.REJECTED,
            default=Outcome.APPROVED,
            score="1.0",
            steps=[
                Step(
                    id="a",
                    channel="phone_call",
                    timeout=10,
                    retry=RetrySettings(attempts=2, timeout=60, wait_jitter=1),
                    providers=["twilio", "vonage"],
                    when="true",
                    fallback=Fallback(step="b", on=["timeout", "failed"]),
                    optional=True,
                    options={"language": "en"},
                ),
                Step(id="b", channel="video_sign", after=["a"]),
            ],
            rules=[Rule(outcome=Outcome.REVIEW, when="true", reason="r", message="m")],
        )
        assert policy.to_dict() == {
            "name": "loan",
            "version": "1",
            "deadline": "1m30s",
            "on_deadline": "rejected",
            "default": "approved",
            "score": "1.0",
            "steps": [
                {
                    "id": "a",
                    "channel": "phone_call",
                    "timeout": "10s",
                    "retry": {
                        "attempts": 2,
                        "timeout": "1m",
                        "wait_initial": "100ms",
                        "wait_max": "5s",
                        "wait_jitter": "1s",
                    },
                    "providers": ["twilio", "vonage"],
                    "when": "true",
                    "fallback": {"step": "b", "on": ["failed", "timeout"]},
                    "optional": True,
                    "options": {"language": "en"},
                },
                {"id": "b", "channel": "video_sign", "after": ["a"]},
            ],
            "rules": [
                {"outcome": "review", "when": "true", "reason": "r", "message": "m"}
            ],
        }

    def test_check_channels(self) -> None:
        """Steps whose channel is missing from a set are reported."""
        policy = make(source="p.toml")
        found = policy.check_channels(["credit_bureau"])
        assert [(p.path, p.source) for p in found] == [("steps[1].channel", "p.toml")]
        assert "unknown channel 'phone_call' (known: credit_bureau)" in found[0].message
        assert policy.check_channels(["credit_bureau", "phone_call"]) == []


class TestHash:
    def test_same_content_same_hash(self) -> None:
        """Two policies built alike hash alike, whatever their source."""
        assert make().hash == make(source="elsewhere.toml").hash
        assert len(make().hash) == 64

    def test_spelling_of_durations_does_not_matter(self) -> None:
        """``"1m"`` and ``60`` are the same deadline."""
        assert make(deadline="1m").hash == make(deadline=60).hash

    @pytest.mark.parametrize(
        "change",
        [
            {"name": "other"},
            {"version": "2"},
            {"deadline": "1h"},
            {"default": Outcome.APPROVED},
            {"rules": [Rule(outcome=Outcome.REJECTED, when="true", reason="r")]},
            {"steps": [Step(id="bureau", channel="credit_bureau", optional=True)]},
            {
                "steps": [
                    Step(id="bureau", channel="credit_bureau", options={"purpose": "x"})
                ]
            },
        ],
    )
    def test_changed_content_changes_hash(self, change: dict[str, Any]) -> None:
        """Any change of content changes the hash."""
        assert make(**change).hash != make().hash


class TestValidation:
    def test_valid_policy_has_no_problems(self) -> None:
        """The sample policy validates."""
        assert make().name == "loan"

    def test_message_counts_problems_and_sets_source(self) -> None:
        """The error counts the problems, and each one names the file."""
        with pytest.raises(PolicyError) as info:
            make(name=" ", version="", source="loan.toml")
        assert info.value.message == "policy ' ' is invalid (2 problems)"
        assert [(p.path, p.message, p.source) for p in info.value.problems] == [
            ("name", "must not be empty", "loan.toml"),
            ("version", "must not be empty", "loan.toml"),
        ]
        assert "loan.toml: name: must not be empty" in str(info.value)

    def test_no_steps(self) -> None:
        """A policy needs a step."""
        assert problems(steps=[]) == [("steps", "a policy needs at least one step")]

    @pytest.mark.parametrize(
        "step_id", ["Bureau", "1st", "", "a-b", "a" * 64, "sms\n", "sms\nx"]
    )
    def test_bad_id(self, step_id: str) -> None:
        """Ids are short lowercase identifiers."""
        assert problems(steps=[Step(id=step_id, channel="sms_code")]) == [
            (
                "steps[0].id",
                f"{step_id!r} is not a valid step id (lowercase letters, digits, _)",
            )
        ]

    def test_duplicate_id(self) -> None:
        """Ids are unique."""
        steps = [Step(id="a", channel="sms_code"), Step(id="a", channel="sms_code")]
        assert problems(steps=steps) == [("steps[1].id", "duplicate step id 'a'")]

    def test_unknown_channel(self) -> None:
        """A channel must be built in or given."""
        found = problems(steps=[Step(id="a", channel="fax")])
        assert found == [
            (
                "steps[0].channel",
                (
                    "unknown channel 'fax' (known: credit_bureau, phone_call, "
                    "sms_code, video_sign)"
                ),
            )
        ]

    def test_registered_channel(self) -> None:
        """Channels passed in are known too."""
        policy = make(
            steps=[Step(id="a", channel="fax")],
            channels={"fax": ChannelSpec(name="fax")},
        )
        assert policy.steps[0].channel == "fax"

    def test_unknown_step_in_after(self) -> None:
        """``after`` names existing steps."""
        steps = [Step(id="a", channel="sms_code", after=["ghost"])]
        assert problems(steps=steps) == [("steps[0].after[0]", "unknown step 'ghost'")]

    def test_wait_for_itself(self) -> None:
        """A step cannot wait for itself (and that is not also a cycle)."""
        steps = [Step(id="a", channel="sms_code", after=["a"])]
        assert problems(steps=steps) == [
            ("steps[0].after[0]", "a step cannot wait for itself")
        ]

    def test_unknown_fallback(self) -> None:
        """A fallback names an existing step."""
        steps = [Step(id="a", channel="sms_code", fallback=Fallback(step="ghost"))]
        assert problems(steps=steps) == [
            ("steps[0].fallback.step", "unknown step 'ghost'")
        ]

    def test_own_fallback(self) -> None:
        """A step is not its own fallback."""
        steps = [Step(id="a", channel="sms_code", fallback=Fallback(step="a"))]
        assert problems(steps=steps) == [
            ("steps[0].fallback.step", "a step cannot be its own fallback")
        ]

    def test_fallback_without_statuses(self) -> None:
        """A fallback starts on at least one status."""
        steps = [
            Step(id="a", channel="sms_code", fallback=Fallback(step="b", on=[])),
            Step(id="b", channel="video_sign"),
        ]
        assert problems(steps=steps) == [
            ("steps[0].fallback.on", "list at least one result status")
        ]

    def test_fallback_of_two_steps(self) -> None:
        """A step is the fallback of one step at most."""
        steps = [
            Step(id="a", channel="sms_code", fallback=Fallback(step="c")),
            Step(id="b", channel="phone_call", fallback=Fallback(step="c")),
            Step(id="c", channel="video_sign"),
        ]
        assert problems(steps=steps) == [
            ("steps[1].fallback.step", "step 'c' is already the fallback of steps[0]")
        ]

    def test_cycle(self) -> None:
        """Steps cannot wait for each other in a circle."""
        steps = [
            Step(id="a", channel="sms_code", after=["c"]),
            Step(id="b", channel="sms_code", after=["a"]),
            Step(id="c", channel="sms_code", after=["b"]),
        ]
        assert problems(steps=steps) == [
            ("steps[0].after", "dependency cycle: a -> c -> b -> a")
        ]

    def test_cycle_through_fallback(self) -> None:
        """A fallback starts after its source, so it closes a cycle too."""
        steps = [
            Step(id="a", channel="sms_code", after=["b"], fallback=Fallback(step="b")),
            Step(id="b", channel="video_sign"),
        ]
        assert problems(steps=steps) == [
            ("steps[0].after", "dependency cycle: a -> b -> a")
        ]

    def test_diamond_is_no_cycle(self) -> None:
        """Two paths to one step are not a cycle."""
        steps = [
            Step(id="a", channel="credit_bureau"),
            Step(id="b", channel="sms_code", after=["a"]),
            Step(id="c", channel="phone_call", after=["a"]),
            Step(id="d", channel="video_sign", after=["b", "c"]),
        ]
        assert make(steps=steps).steps[3].after == ("b", "c")

    def test_every_problem_is_reported(self) -> None:
        """Problems are collected, not raised one by one."""
        steps = [
            Step(id="A", channel="fax", after=["ghost"], when="nope"),
            Step(id="b", channel="sms_code", fallback=Fallback(step="zzz")),
        ]
        assert [path for path, _ in problems(steps=steps)] == [
            "steps[0].id",
            "steps[0].channel",
            "steps[0].after[0]",
            "steps[1].fallback.step",
            "steps[0].when",
        ]


class TestConditions:
    def test_syntax_error(self) -> None:
        """A condition that does not parse is located."""
        steps = [Step(id="a", channel="sms_code", when="application.amount >")]
        ((path, message),) = problems(steps=steps)
        assert path == "steps[0].when"
        assert message.startswith("CEL syntax error: <input>:1:")

    def test_empty(self) -> None:
        """An empty condition is a syntax error."""
        steps = [Step(id="a", channel="sms_code", when=" ")]
        assert problems(steps=steps) == [
            ("steps[0].when", "CEL syntax error: empty expression")
        ]

    def test_unknown_name(self) -> None:
        """Conditions read applicant, application or steps only."""
        steps = [Step(id="a", channel="sms_code", when="amount > 1 && user")]
        assert problems(steps=steps) == [
            (
                "steps[0].when",
                "unknown name 'amount' (use applicant, application or steps)",
            ),
            (
                "steps[0].when",
                "unknown name 'user' (use applicant, application or steps)",
            ),
        ]

    def test_unknown_step(self) -> None:
        """``steps.<id>`` names an existing step."""
        found = problems(rules=[rule("steps.ghost.status == 'passed'")])
        assert found == [
            ("rules[0].when", "unknown step 'ghost' in steps.ghost.status")
        ]

    def test_unknown_step_field(self) -> None:
        """``steps.<id>.<field>`` names a known field."""
        ((path, message),) = problems(rules=[rule("steps.bureau.outcome == 'x'")])
        assert path == "rules[0].when"
        assert message.startswith("unknown field 'outcome' of steps.bureau (known: ")

    def test_whole_step_is_fine(self) -> None:
        """A condition may read a step as a whole."""
        assert make(rules=[rule("has(steps.bureau)")]).rules[0].when

    def test_unknown_applicant_field(self) -> None:
        """``applicant.<field>`` names a known field."""
        ((path, message),) = problems(rules=[rule("applicant.salary > 1")])
        assert path == "rules[0].when"
        assert message.startswith("unknown field 'salary' of applicant (known: age, ")

    def test_unknown_application_field(self) -> None:
        """``application.<field>`` names a known field."""
        ((_, message),) = problems(score="application.income * 1.0")
        assert message.startswith("unknown field 'income' of application (known: ")

    def test_score_path(self) -> None:
        """Problems of the score expression sit at ``score``."""
        assert problems(score="x") == [
            ("score", "unknown name 'x' (use applicant, application or steps)")
        ]


class TestRules:
    def test_empty_reason(self) -> None:
        """A rule gives a reason code."""
        found = problems(rules=[rule("applicant.age < 18", reason=" ")])
        assert found == [("rules[0].reason", "must not be empty")]

    def test_shadowed_by_always_true(self) -> None:
        """Rules after an always-true rule never fire."""
        found = problems(rules=[rule("true"), rule("applicant.age < 18")])
        assert found == [
            ("rules[1].when", "can never fire: rules[0] always holds first")
        ]

    def test_duplicate_condition(self) -> None:
        """A repeated condition (spacing aside) never fires the second time."""
        found = problems(
            rules=[rule("applicant.age < 18"), rule("applicant.age  <\n18", "review")]
        )
        assert found == [
            ("rules[1].when", "can never fire: rules[0] has the same condition")
        ]

    def test_constant_false(self) -> None:
        """A condition that is always false never fires."""
        assert problems(rules=[rule("1 > 2")]) == [
            ("rules[0].when", "can never fire: the condition is always false")
        ]

    def test_constant_that_fails(self) -> None:
        """A constant condition that cannot be evaluated is reported."""
        ((path, message),) = problems(rules=[rule("1 / 0 == 1")])
        assert path == "rules[0].when"
        assert message.startswith("cannot be evaluated: ZeroDivisionError")

    @pytest.mark.parametrize(
        "when",
        ["steps.bureau.status == 'passd'", "'passd' != steps.bureau.status"],
    )
    def test_impossible_status(self, when: str) -> None:
        """A step status is compared with a status it can take."""
        ((path, message),) = problems(rules=[rule(when)])
        assert path == "rules[0].when"
        assert message.startswith(
            "can never fire: steps.bureau.status is never 'passd' (one of cancelled, "
        )

    def test_known_statuses(self) -> None:
        """Step states such as ``waiting`` and ``skipped`` are statuses too."""
        policy = make(
            rules=[
                rule("steps.call.status == 'skipped'"),
                rule("steps.call.status == 'waiting'"),
                rule("steps.call.status == 'timeout'"),
            ]
        )
        assert len(policy.rules) == 3

    def test_undeclared_signal(self) -> None:
        """A signal the step's channel never emits never fires."""
        assert problems(rules=[rule("'fraud' in steps.bureau.signals")]) == [
            (
                "rules[0].when",
                "can never fire: channel 'credit_bureau' never emits signal 'fraud'",
            )
        ]

    def test_signal_of_unknown_step(self) -> None:
        """A signal of an unknown step is reported once, as the unknown step."""
        assert problems(rules=[rule("'x' in steps.ghost.signals")]) == [
            ("rules[0].when", "unknown step 'ghost' in steps.ghost.signals")
        ]

    def test_signal_inside_a_string_is_not_a_reference(self) -> None:
        """Text that only looks like a signal test names no step."""
        policy = make(rules=[rule("applicant.id != \"'x' in steps.ghost.signals\"")])
        assert policy.rules[0].reason == "r"

    def test_channel_without_declared_signals(self) -> None:
        """A channel that declares no signals accepts any."""
        policy = make(
            steps=[Step(id="a", channel="fax")],
            channels={"fax": ChannelSpec(name="fax")},
            rules=[rule("'anything' in steps.a.signals")],
        )
        assert policy.rules[0].reason == "r"

    def test_bad_rule_is_not_analysed_further(self) -> None:
        """A rule that does not compile is reported once."""
        found = problems(rules=[rule("1 +"), rule("1 +")])
        assert [path for path, _ in found] == ["rules[0].when", "rules[1].when"]
        assert all(message.startswith("CEL syntax error") for _, message in found)


MIXED_TYPES = (
    "can never fire: it mixes types no value supports "
    "(such as a number compared with text)"
)


class TestTimingAndTypes:
    @pytest.mark.parametrize(
        ("overrides", "path"),
        [
            ({"deadline": "0s"}, "deadline"),
            (
                {"steps": [Step(id="bureau", channel="credit_bureau", timeout=0)]},
                "steps[0].timeout",
            ),
            (
                {
                    "steps": [
                        Step(
                            id="bureau",
                            channel="credit_bureau",
                            retry=RetrySettings(timeout="0s"),
                        )
                    ]
                },
                "steps[0].retry.timeout",
            ),
        ],
    )
    def test_zero_durations(self, overrides: dict[str, Any], path: str) -> None:
        """A deadline or timeout of zero would end everything at once: refused."""
        assert problems(**overrides) == [(path, "must be longer than zero")]

    def test_backoff_longer_than_its_cap(self) -> None:
        """A first backoff longer than ``wait_max`` is refused."""
        retry = RetrySettings(wait_initial="10s", wait_max="2s")
        steps = [Step(id="bureau", channel="credit_bureau", retry=retry)]
        assert problems(steps=steps) == [
            ("steps[0].retry.wait_initial", "10s is longer than wait_max (2s)")
        ]

    def test_duplicate_provider(self) -> None:
        """A provider listed twice in a failover order is named at its place."""
        steps = [Step(id="bureau", channel="credit_bureau", providers=["a", "b", "a"])]
        assert problems(steps=steps) == [
            ("steps[0].providers[2]", "duplicate provider 'a'")
        ]

    @pytest.mark.parametrize(
        "reason", ["Fraud alert!", "bureau fraud", "Bureau.Fraud", "bureau.fraud\n"]
    )
    def test_reason_must_be_a_code(self, reason: str) -> None:
        """A rule's reason is a stable machine code; text goes in ``message``."""
        found = problems(rules=[rule("steps.bureau.status == 'failed'", reason=reason)])
        assert [path for path, _ in found] == ["rules[0].reason"]
        assert "is not a reason code" in found[0][1]

    @pytest.mark.parametrize(
        "reason", ["bureau.fraud_alert", "all-confirmed", "fraud", "kyc.v2.miss"]
    )
    def test_reason_codes(self, reason: str) -> None:
        """Dotted, dashed and plain lowercase codes are accepted."""
        make(rules=[rule("steps.bureau.status == 'failed'", reason=reason)])

    @pytest.mark.parametrize(
        "when",
        [
            "steps.bureau.score > 'high'",
            "application.amount > 'large'",
            "applicant.age + 'years' > 18",
            "steps.bureau.status == 'passed' && steps.bureau.attempts > '1'",
        ],
    )
    def test_rule_mixing_types_can_never_fire(self, when: str) -> None:
        """A comparison no value of the field's type supports can never fire."""
        assert problems(rules=[rule(when)]) == [("rules[0].when", MIXED_TYPES)]

    @pytest.mark.parametrize(
        ("path", "overrides"),
        [
            ("rules[0].when", {"rules": [rule("steps.bureau.score")]}),
            (
                "steps[1].when",
                {
                    "steps": [
                        Step(id="bureau", channel="credit_bureau"),
                        Step(
                            id="call", channel="phone_call", when="application.amount"
                        ),
                    ]
                },
            ),
        ],
    )
    def test_condition_must_be_boolean(
        self, path: str, overrides: dict[str, Any]
    ) -> None:
        """A condition that yields a number never holds: refused."""
        assert problems(**overrides) == [(path, "must yield a boolean, got float")]

    @pytest.mark.parametrize(
        ("when", "message"),
        [
            ("'yes'", "cannot be evaluated: expected a boolean, got str"),
            ("null", "cannot be evaluated: expected a boolean, got NoneType"),
            ("1 / 0 == 1", "cannot be evaluated: ZeroDivisionError"),
        ],
    )
    def test_constant_step_condition_must_evaluate(
        self, when: str, message: str
    ) -> None:
        """A step condition failing for every applicant would skip it: refused."""
        steps = [
            Step(id="bureau", channel="credit_bureau"),
            Step(id="call", channel="phone_call", when=when),
        ]
        [(path, found)] = problems(steps=steps)
        assert path == "steps[1].when"
        assert found.startswith(message)

    @pytest.mark.parametrize("when", ["true", "false", "1 < 2"])
    def test_constant_boolean_step_condition_is_accepted(self, when: str) -> None:
        """A step switched on or off by a constant condition validates."""
        make(steps=[Step(id="bureau", channel="credit_bureau", when=when)])

    @pytest.mark.parametrize("score", ["'high'", "steps.bureau.status"])
    def test_score_must_be_a_number(self, score: str) -> None:
        """A score expression yielding text is refused, constant or not."""
        assert problems(score=score) == [("score", "must yield a number, got str")]

    @pytest.mark.parametrize(
        "when",
        [
            "steps.bureau.score > 0.7",
            "steps.bureau.score >= 1",
            "steps.bureau.facts.band == 'a'",
            "steps.bureau.status == 'failed' && steps.bureau.score > 'x'",
            "application.annual_rate < 0.2 && applicant.age >= 18",
            "'fraud_alert' in steps.bureau.signals || size(steps.call.signals) > 2",
        ],
    )
    def test_value_dependent_conditions_are_accepted(self, when: str) -> None:
        """What may hold for some value (a missing fact, a branch not taken) passes."""
        make(rules=[rule(when)])


OUTCOMES = "approved, expired, rejected, review"
STATUSES = "cancelled, error, failed, inconclusive, passed, timeout"


class TestBuiltInPython:
    """A bad value in a policy built in Python is a located `PolicyError` too."""

    @pytest.mark.parametrize(
        ("build", "path", "message"),
        [
            (
                lambda: RetrySettings(attempts="3"),  # type: ignore[arg-type]
                "retry.attempts",
                "expected an integer, got str",
            ),
            (
                lambda: RetrySettings(wait_max="soon"),
                "retry.wait_max",
                "not a duration: 'soon' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                lambda: RetrySettings(timeout=-1),
                "retry.timeout",
                "a duration must not be negative: -1",
            ),
            (
                lambda: Step(id="bureau", channel="credit_bureau", timeout="ten"),
                "timeout",
                "not a duration: 'ten' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                lambda: Step(id=7, channel="credit_bureau"),  # type: ignore[arg-type]
                "id",
                "expected a string, got int",
            ),
            (
                lambda: Step(id="call", channel="phone_call", after=["bureau", 2]),  # type: ignore[list-item]
                "after[1]",
                "expected a string, got int",
            ),
            (
                lambda: Step(id="call", channel="phone_call", when=True),  # type: ignore[arg-type]
                "when",
                "expected a string, got bool",
            ),
            (
                lambda: Fallback(step="video", on=["failed", "timed_out"]),
                "fallback.on",
                f"'timed_out' is not a result status (one of {STATUSES})",
            ),
            (
                lambda: Fallback(step="video", on="failed"),
                "fallback.on",
                "expected a list of result statuses, got 'failed'",
            ),
            (
                lambda: Rule(outcome="approve", when="true", reason="ok"),
                "outcome",
                f"'approve' is not an outcome (one of {OUTCOMES})",
            ),
            (
                lambda: Rule(outcome="approved", when=None, reason="ok"),  # type: ignore[arg-type]
                "when",
                "expected a string, got NoneType",
            ),
            (lambda: make(name=None), "name", "expected a string, got NoneType"),
            (
                lambda: make(on_deadline="lapsed"),
                "on_deadline",
                f"'lapsed' is not an outcome (one of {OUTCOMES})",
            ),
            (
                lambda: make(deadline="half an hour"),
                "deadline",
                "not a duration: 'half an hour' (write it like '30s', '5m' or '1h30m')",
            ),
            (lambda: make(score=0.5), "score", "expected a string, got float"),
            (
                lambda: Step(id="sms", channel="sms_code", providers="twilio"),
                "providers",
                "expected a list, got str",
            ),
            (
                lambda: Step(id="call", channel="phone_call", after="bureau"),
                "after",
                "expected a list, got str",
            ),
            (
                lambda: Step(id="call", channel="phone_call", after=None),  # type: ignore[arg-type]
                "after",
                "expected a list, got NoneType",
            ),
            (
                lambda: Step(id="a", channel="sms_code", retry={"attempts": 2}),  # type: ignore[arg-type]
                "retry",
                "expected a RetrySettings, got dict",
            ),
            (
                lambda: Step(id="a", channel="sms_code", fallback="b"),  # type: ignore[arg-type]
                "fallback",
                "expected a Fallback, got str",
            ),
            (
                lambda: Step(id="a", channel="sms_code", optional="no"),  # type: ignore[arg-type]
                "optional",
                "expected true or false, got str",
            ),
            (
                lambda: Step(id="a", channel="sms_code", options=[("a", 1)]),  # type: ignore[arg-type]
                "options",
                "expected a table, got list",
            ),
            (
                lambda: Step(id="a", channel="sms_code", options={1: "x"}),  # type: ignore[dict-item]
                "options",
                "keys must be strings, got 1",
            ),
            (lambda: make(steps=None), "steps", "expected a list, got NoneType"),
            (
                lambda: make(steps=[{"id": "a", "channel": "sms_code"}]),
                "steps[0]",
                "expected a Step, got dict",
            ),
            (lambda: make(rules=["true"]), "rules[0]", "expected a Rule, got str"),
            (lambda: make(scripts=["x"]), "scripts", "expected a table, got list"),
            (
                lambda: make(scripts={"intro": "hello"}),
                "scripts.intro",
                "expected a table, got str",
            ),
            (lambda: make(review={}), "review", "expected a ReviewSettings, got dict"),
            (lambda: make(channels=["fax"]), "channels", "expected a table, got list"),
        ],
    )
    def test_bad_values_are_located(
        self, build: Callable[[], object], path: str, message: str
    ) -> None:
        """Each bad value names its field and the problem."""
        with pytest.raises(PolicyError) as info:
            build()
        assert [(p.path, p.message) for p in info.value.problems] == [(path, message)]
        assert info.value.message == f"{path}: {message}"


class TestPrice:
    def test_price_is_part_of_the_document_and_hash(self) -> None:
        """A priced step keeps its price in the document; an unpriced one leaves it out."""
        plain = make()
        priced = make(
            steps=[
                Step(id="bureau", channel="credit_bureau", price=0.4),
                Step(id="call", channel="phone_call", after=["bureau"]),
            ]
        )
        assert "price" not in plain.to_dict()["steps"][0]
        assert priced.to_dict()["steps"][0]["price"] == 0.4
        assert priced.hash != plain.hash
        assert priced.step("bureau").price == 0.4
        assert priced.step("call").price is None

    @pytest.mark.parametrize(
        ("price", "message"),
        [
            (-1, "must be a number of at least 0, got -1"),
            (float("inf"), "must be a number of at least 0, got inf"),
            (float("nan"), "must be a number of at least 0, got nan"),
            ("1.5", "expected a number, got str"),
            (True, "expected a number, got bool"),
        ],
    )
    def test_bad_prices_are_located(self, price: object, message: str) -> None:
        """A price built in Python is checked like a loaded one."""
        steps = [
            Step(id="bureau", channel="credit_bureau"),
            Step(id="call", channel="phone_call", price=price),  # type: ignore[arg-type]
        ]
        assert problems(steps=steps) == [("steps[1].price", message)]
