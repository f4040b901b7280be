"""Tests for loading policies from TOML, YAML, JSON and plain documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from multiverify import ChannelSpec, Outcome, ResultStatus
from multiverify.exceptions import PolicyError
from multiverify.policy import (
    Fallback,
    Policy,
    RetrySettings,
    Rule,
    Step,
    load_policy,
    parse_policy,
    policy_from_dict,
)
from multiverify.policy._loader import _syntax_problem

DATA = Path(__file__).parent / "data"


def consumer_loan() -> Policy:
    """The sample policy of ``data/``, built in Python."""
    return Policy(
        name="consumer-loan",
        version="2026-11-28",
        deadline="30m",
        steps=[
            Step(
                id="bureau",
                channel="credit_bureau",
                timeout="10s",
                retry=RetrySettings(attempts=3, wait_max="2s"),
            ),
            Step(
                id="call",
                channel="phone_call",
                after=["bureau"],
                when="application.amount > 2000",
                fallback=Fallback(step="video", on=["failed", "timeout"]),
            ),
            Step(id="video", channel="video_sign"),
        ],
        rules=[
            Rule(
                outcome=Outcome.REJECTED,
                when="'fraud_alert' in steps.bureau.signals",
                reason="bureau.fraud_alert",
            )
        ],
    )


def minimal(**overrides: Any) -> dict[str, Any]:
    """A minimal valid document, with some keys replaced."""
    return {
        "name": "loan",
        "version": "1",
        "steps": [{"id": "a", "channel": "sms_code"}],
    } | overrides


def step(**overrides: Any) -> dict[str, Any]:
    """A document whose only step has some keys replaced."""
    return minimal(steps=[{"id": "a", "channel": "sms_code"} | overrides])


def structural(document: object, source: str | None = None) -> list[tuple[str, str]]:
    """The located problems of an invalid document."""
    with pytest.raises(PolicyError) as info:
        policy_from_dict(document, source=source)  # type: ignore[arg-type]
    assert all(problem.source == source for problem in info.value.problems)
    return [(problem.path, problem.message) for problem in info.value.problems]


class TestLoadPolicy:
    def test_toml_example(self) -> None:
        """The TOML example loads into the policy it describes."""
        policy = load_policy(DATA / "consumer-loan.toml")
        assert policy == consumer_loan()
        assert policy.source == str(DATA / "consumer-loan.toml")
        assert policy.step("bureau").retry == RetrySettings(wait_max=2)
        assert policy.step("call").fallback == Fallback(
            step="video", on=[ResultStatus.FAILED, ResultStatus.TIMEOUT]
        )

    @pytest.mark.parametrize(
        "name", ["consumer-loan.toml", "consumer-loan.yaml", "consumer-loan.json"]
    )
    def test_same_hash_in_every_format(self, name: str) -> None:
        """Built in Python or loaded from any format, the hash is the same."""
        assert load_policy(DATA / name).hash == consumer_loan().hash

    def test_yml_suffix_and_str_path(self, tmp_path: Path) -> None:
        """``.yml`` is YAML too, and a path may be a string."""
        path = tmp_path / "policy.YML"
        path.write_text(yaml.safe_dump(consumer_loan().to_dict()), encoding="utf-8")
        assert load_policy(str(path)).hash == consumer_loan().hash

    def test_byte_order_mark(self, tmp_path: Path) -> None:
        """A UTF-8 byte order mark is skipped."""
        path = tmp_path / "policy.json"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps(minimal()).encode())
        assert load_policy(path).name == "loan"

    def test_channels(self, tmp_path: Path) -> None:
        """Registered channels are known to a loaded policy."""
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(step(channel="fax")), encoding="utf-8")
        policy = load_policy(path, channels={"fax": ChannelSpec(name="fax")})
        assert policy.steps[0].channel == "fax"

    def test_unknown_suffix(self, tmp_path: Path) -> None:
        """A file type other than TOML, YAML or JSON is refused."""
        path = tmp_path / "policy.ini"
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        (problem,) = info.value.problems
        assert (problem.path, problem.source) == ("(document)", str(path))
        assert problem.message == (
            "unknown file type '.ini' (use .toml, .yaml, .yml or .json)"
        )
        assert info.value.message == f"cannot load policy from {path}"

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is a located problem."""
        path = tmp_path / "policy.toml"
        path.write_bytes(b"name = '\xff'")
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        (problem,) = info.value.problems
        assert (problem.path, problem.source) == ("(document)", str(path))
        assert problem.message == "not UTF-8 text: invalid start byte"

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("missing.toml", "cannot read it: No such file or directory"),
            ("folder.toml", "cannot read it: Is a directory"),
        ],
    )
    def test_unreadable_file(self, tmp_path: Path, name: str, message: str) -> None:
        """A file that is missing or a directory is a located problem, its cause kept."""
        (tmp_path / "folder.toml").mkdir()
        path = tmp_path / name
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        (problem,) = info.value.problems
        assert (problem.path, problem.source) == ("(document)", str(path))
        assert problem.message == message
        assert info.value.message == f"cannot load policy from {path}"
        assert isinstance(info.value.__cause__, OSError)

    def test_semantic_problems_name_the_file(self, tmp_path: Path) -> None:
        """Problems found by the policy itself carry the file name too."""
        path = tmp_path / "policy.toml"
        path.write_text(
            'name = "loan"\nversion = "1"\n[[steps]]\nid = "a"\nchannel = "fax"\n',
            encoding="utf-8",
        )
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        (problem,) = info.value.problems
        assert (problem.path, problem.source) == ("steps[0].channel", str(path))
        assert str(problem).startswith(
            f"{path}: steps[0].channel: unknown channel 'fax'"
        )

    def test_structural_problems_name_the_file(self, tmp_path: Path) -> None:
        """Structural problems carry the file name."""
        path = tmp_path / "policy.yaml"
        path.write_text("name: loan\nversion: 1\nsteps: []\n", encoding="utf-8")
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        assert info.value.message == "policy 'loan' is invalid (1 problem)"
        (problem,) = info.value.problems
        assert (problem.path, problem.source) == ("version", str(path))
        assert problem.message == "expected a string, got an integer"


class TestParsePolicy:
    @pytest.mark.parametrize("file_format", ["toml", "yaml", "json"])
    def test_round_trip_through_text(self, file_format: str) -> None:
        """A policy written out and parsed back keeps its hash."""
        document = consumer_loan().to_dict()
        dumps = {
            "toml": None,
            "yaml": yaml.safe_dump,
            "json": json.dumps,
        }[file_format]
        text = (
            (DATA / "consumer-loan.toml").read_text(encoding="utf-8")
            if dumps is None
            else dumps(document)
        )
        policy = parse_policy(text, format=file_format, source="x")  # type: ignore[arg-type]
        assert policy.hash == consumer_loan().hash
        assert policy.source == "x"

    def test_unknown_format(self) -> None:
        """Only toml, yaml and json are formats."""
        with pytest.raises(ValueError, match="unknown policy format 'ini'"):
            parse_policy("", format="ini")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("file_format", "text", "path", "message"),
        [
            (
                "toml",
                'name = "loan"\nversion = \n',
                "line 2, column 11",
                "TOML syntax error: Invalid value",
            ),
            (
                "toml",
                "x = 1\nx = 2",
                "(document)",
                "TOML syntax error: Cannot overwrite a value (at end of document)",
            ),
            (
                "json",
                '{"name": "loan",\n  "version": }',
                "line 2, column 14",
                "JSON syntax error: Expecting value",
            ),
            (
                "json",
                '{"name": "a", "name": "b"}',
                "(document)",
                "JSON syntax error: duplicate key 'name'",
            ),
            (
                "yaml",
                "name: loan\nsteps: [1\nrules: []\n",
                "line 3, column 6",
                (
                    "YAML syntax error: expected ',' or ']', but got ':' "
                    "(while parsing a flow sequence)"
                ),
            ),
            (
                "yaml",
                "name: loan\nversion: '1'\nname: again\n",
                "line 3, column 1",
                "YAML syntax error: found duplicate key 'name' (while reading a mapping)",
            ),
            (
                "yaml",
                "name: !!python/object:os.system x\n",
                "line 1, column 7",
                (
                    "YAML syntax error: could not determine a constructor for the tag "
                    "'tag:yaml.org,2002:python/object:os.system'"
                ),
            ),
            (
                "yaml",
                "name: \x01",
                "(document)",
                (
                    "YAML syntax error: unacceptable character #x0001: "
                    "special characters are not allowed\n"
                    '  in "<unicode string>", position 6'
                ),
            ),
        ],
    )
    def test_syntax_errors(
        self, file_format: str, text: str, path: str, message: str
    ) -> None:
        """A syntax error is located by line and column when the parser says."""
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format=file_format, source="p")  # type: ignore[arg-type]
        assert info.value.message == f"policy p does not parse as {file_format.upper()}"
        assert [(p.path, p.message, p.source) for p in info.value.problems] == [
            (path, message, "p")
        ]

    @pytest.mark.parametrize(
        ("file_format", "text"),
        [
            ("json", "[" * 100_000),
            ("json", '{"a": ' * 100_000),
            ("toml", "a = " + "[" * 100_000),
            ("yaml", "[" * 100_000),
        ],
    )
    def test_nesting_too_deep_to_read(self, file_format: str, text: str) -> None:
        """A document nested deeper than its parser can follow is a located problem."""
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format=file_format, source="p")  # type: ignore[arg-type]
        assert info.value.message == f"policy p does not parse as {file_format.upper()}"
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("(document)", f"{file_format.upper()} syntax error: nested too deeply")
        ]

    def test_yaml_error_without_mark(self) -> None:
        """A YAML error without a position is reported for the whole document."""
        problem = _syntax_problem(yaml.MarkedYAMLError(problem="boom"), "yaml", None)
        assert (problem.path, problem.message) == (
            "(document)",
            "YAML syntax error: boom",
        )

    @pytest.mark.parametrize(
        "text",
        [
            "? [a, b]\n: 1\nname: loan\n",
            (
                "name: loan\nversion: '1'\nsteps:\n"
                "  - {id: a, channel: sms_code, options: {[1, 2]: 3}}\n"
            ),
        ],
    )
    def test_yaml_unhashable_key(self, text: str) -> None:
        """A list used as a YAML key is a located syntax error, not a TypeError."""
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format="yaml", source="p.yaml")
        [problem] = info.value.problems
        assert problem.path.startswith("line ")
        assert "unhashable key" in problem.message

    def test_yaml_one_two_booleans(self) -> None:
        """``on`` stays a key and ``yes`` a string: YAML 1.2 booleans only."""
        text = (
            "name: loan\nversion: '1'\nsteps:\n"
            "  - {id: a, channel: sms_code, optional: yes,"
            " fallback: {step: b, on: [failed]}}\n"
            "  - {id: b, channel: video_sign, optional: true}\n"
        )
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format="yaml")
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("steps[0].optional", "expected true or false, got a string")
        ]
        policy = parse_policy(text.replace("yes", "false"), format="yaml")
        assert policy.steps[0].fallback == Fallback(step="b", on=["failed"])
        assert policy.steps[1].optional

    @pytest.mark.parametrize(
        ("file_format", "text", "kind"),
        [
            ("yaml", "- 1\n", "a list"),
            ("json", "3", "an integer"),
            ("yaml", "", "null"),
        ],
    )
    def test_document_not_a_table(self, file_format: str, text: str, kind: str) -> None:
        """The document is a table of settings."""
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format=file_format)  # type: ignore[arg-type]
        assert info.value.message == "policy document is invalid (1 problem)"
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("(document)", f"expected a table of policy settings, got {kind}")
        ]


class TestPolicyFromDict:
    def test_round_trip(self) -> None:
        """A policy's document builds a policy with the same hash."""
        policy = Policy(
            name="rich",
            version="7",
            deadline="1h30m",
            on_deadline=Outcome.REJECTED,
            default=Outcome.APPROVED,
            score="steps.a.score * 1.0",
            steps=[
                Step(
                    id="a",
                    channel="sms_code",
                    timeout="2m",
                    retry=RetrySettings(
                        attempts=5, timeout="1m", wait_initial=1, wait_jitter="250ms"
                    ),
                    providers=["twilio", "vonage"],
                    when="applicant.age >= 18",
                    fallback=Fallback(step="b"),
                    optional=True,
                    options={"length": 6, "nested": {"a": [1, 2]}},
                ),
                Step(id="b", channel="video_sign"),
                Step(id="c", channel="credit_bureau", after=["a", "b"]),
            ],
            rules=[
                Rule(
                    outcome=Outcome.REVIEW,
                    when="'wrong_code' in steps.a.signals",
                    reason="a.wrong_code",
                    message="ask a person",
                )
            ],
        )
        again = policy_from_dict(policy.to_dict())
        assert again.hash == policy.hash
        assert again == policy

    def test_nulls_are_absent(self) -> None:
        """A null optional setting means "not given"."""
        document = minimal(deadline=None, rules=None, score=None)
        document["steps"][0] |= {"timeout": None, "retry": None, "fallback": None}
        assert policy_from_dict(document).hash == policy_from_dict(minimal()).hash

    def test_source_and_unnamed_message(self) -> None:
        """Without a usable name, the message names the source."""
        with pytest.raises(PolicyError) as info:
            policy_from_dict({"name": 3}, source="p.json")
        assert info.value.message == "policy p.json is invalid (3 problems)"

    def test_not_a_mapping(self) -> None:
        """A caller without a type checker may pass anything."""
        assert structural(["name"]) == [("(document)", "expected a table, got a list")]

    def test_missing_keys(self) -> None:
        """Required keys are named when missing."""
        assert structural({}) == [
            ("name", "missing required key"),
            ("steps", "missing required key"),
            ("version", "missing required key"),
        ]

    def test_unknown_keys(self) -> None:
        """Unknown keys are errors, with a suggestion for a likely typo."""
        found = structural(minimal(deadlin="1m", colour="red"))
        assert [path for path, _ in found] == ["deadlin", "colour"]
        assert found[0][1].startswith(
            "unknown key (did you mean 'deadline'?); known keys: deadline, default, "
        )
        assert found[1][1].startswith("unknown key; known keys: ")

    def test_unusual_type(self) -> None:
        """A value of a type no format produces is named by its class."""
        assert structural(minimal(name={"a"})) == [
            ("name", "expected a string, got set")
        ]

    def test_non_string_key(self) -> None:
        """Keys are strings."""
        assert structural(minimal() | {1: "x"}) == [
            ("(document)", "keys must be strings, got an integer 1")
        ]

    @pytest.mark.parametrize(
        ("overrides", "path", "message"),
        [
            ({"name": 1}, "name", "expected a string, got an integer"),
            ({"name": None}, "name", "expected a string, got null"),
            ({"version": 2.5}, "version", "expected a string, got a number"),
            (
                {"deadline": "soon"},
                "deadline",
                "not a duration: 'soon' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                {"deadline": [1]},
                "deadline",
                "expected a duration such as '30s' or '5m', got a list",
            ),
            (
                {"deadline": True},
                "deadline",
                "expected a duration such as '30s' or '5m', got a boolean",
            ),
            ({"deadline": -1}, "deadline", "a duration must not be negative: -1"),
            (
                {"on_deadline": "late"},
                "on_deadline",
                "'late' is not an outcome (one of approved, expired, rejected, review)",
            ),
            (
                {"default": "aproved"},
                "default",
                "'aproved' is not an outcome (one of approved, expired, rejected, review)",
            ),
            ({"default": 1}, "default", "expected a string, got an integer"),
            ({"score": {"a": 1}}, "score", "expected a string, got a table"),
            ({"steps": {"id": "a"}}, "steps", "expected a list, got a table"),
            ({"steps": ["a"]}, "steps[0]", "expected a table, got a string"),
            ({"rules": "none"}, "rules", "expected a list, got a string"),
            ({"rules": [7]}, "rules[0]", "expected a table, got an integer"),
        ],
    )
    def test_top_level_problems(
        self, overrides: dict[str, Any], path: str, message: str
    ) -> None:
        """Each top-level setting is checked and located."""
        assert structural(minimal(**overrides), "p.json") == [(path, message)]

    @pytest.mark.parametrize(
        ("document", "path"),
        [
            (minimal(deadline=10**400), "deadline"),
            (minimal(deadline="999999999d"), "deadline"),
            (step(timeout="9999999999d"), "steps[0].timeout"),
            (step(retry={"wait_max": 10**20}), "steps[0].retry.wait_max"),
        ],
    )
    def test_durations_too_long_for_a_datetime(
        self, document: dict[str, Any], path: str
    ) -> None:
        """A duration no clock can be moved by is located, not an OverflowError."""
        problems = structural(document)
        assert [where for where, _ in problems] == [path]
        assert "must be" in problems[0][1]

    def test_dates_get_a_hint(self) -> None:
        """An unquoted date is a date; the message says to quote it."""
        document = parse_document('name = "a"\nversion = 2026-11-28\n')
        assert structural(document) == [
            ("steps", "missing required key"),
            ("version", "expected a string, got a date (quote it to make it a string)"),
        ]

    @pytest.mark.parametrize(
        ("overrides", "path", "message"),
        [
            ({"id": 1}, "steps[0].id", "expected a string, got an integer"),
            ({"channel": None}, "steps[0].channel", "expected a string, got null"),
            (
                {"timeout": "10 secs"},
                "steps[0].timeout",
                "not a duration: '10 secs' (write it like '30s', '5m' or '1h30m')",
            ),
            ({"retry": 3}, "steps[0].retry", "expected a table, got an integer"),
            (
                {"retry": {"attempts": 0}},
                "steps[0].retry.attempts",
                "must be at least 1, got 0",
            ),
            (
                {"retry": {"attempts": 2.0}},
                "steps[0].retry.attempts",
                "expected an integer, got a number",
            ),
            (
                {"retry": {"attempts": True}},
                "steps[0].retry.attempts",
                "expected an integer, got a boolean",
            ),
            (
                {"retry": {"timeout": "x"}},
                "steps[0].retry.timeout",
                "not a duration: 'x' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                {"retry": {"wait_initial": []}},
                "steps[0].retry.wait_initial",
                "expected a duration such as '30s' or '5m', got a list",
            ),
            (
                {"retry": {"wait_max": "-"}},
                "steps[0].retry.wait_max",
                "not a duration: '-' (write it like '30s', '5m' or '1h30m')",
            ),
            (
                {"retry": {"wait_jitter": -0.5}},
                "steps[0].retry.wait_jitter",
                "a duration must not be negative: -0.5",
            ),
            (
                {"providers": "twilio"},
                "steps[0].providers",
                "expected a list, got a string",
            ),
            (
                {"providers": ["a", 2]},
                "steps[0].providers[1]",
                "expected a string, got an integer",
            ),
            ({"after": [None]}, "steps[0].after[0]", "expected a string, got null"),
            ({"when": False}, "steps[0].when", "expected a string, got a boolean"),
            (
                {"fallback": "video"},
                "steps[0].fallback",
                "expected a table, got a string",
            ),
            ({"fallback": {}}, "steps[0].fallback.step", "missing required key"),
            (
                {"fallback": {"step": 1}},
                "steps[0].fallback.step",
                "expected a string, got an integer",
            ),
            (
                {"fallback": {"step": "b", "on": "failed"}},
                "steps[0].fallback.on",
                "expected a list, got a string",
            ),
            (
                {"fallback": {"step": "b", "on": ["failed", "broken"]}},
                "steps[0].fallback.on[1]",
                (
                    "'broken' is not a result status (one of cancelled, error, failed, "
                    "inconclusive, passed, timeout)"
                ),
            ),
            (
                {"optional": "yes"},
                "steps[0].optional",
                "expected true or false, got a string",
            ),
            ({"options": ["a"]}, "steps[0].options", "expected a table, got a list"),
            (
                {"options": {1: "a"}},
                "steps[0].options",
                "keys must be strings, got an integer 1",
            ),
        ],
    )
    def test_step_problems(
        self, overrides: dict[str, Any], path: str, message: str
    ) -> None:
        """Each step setting is checked and located."""
        assert structural(step(**overrides), "p.yaml") == [(path, message)]

    def test_step_unknown_keys(self) -> None:
        """Unknown keys of a step and of its nested tables are errors."""
        found = structural(
            step(
                chanel="x",
                retry={"attempt": 2},
                fallback={"step": "b", "when": "x"},
            )
        )
        assert [path for path, _ in found] == [
            "steps[0].chanel",
            "steps[0].retry.attempt",
            "steps[0].fallback.when",
            "steps[0].fallback.step",  # semantic, in the same round
        ]
        assert "did you mean 'channel'?" in found[0][1]
        assert "did you mean 'attempts'?" in found[1][1]
        assert found[3][1] == "unknown step 'b'"

    def test_structural_and_semantic_problems_in_one_round(self) -> None:
        """A typo'd key does not hide the semantic mistakes of the rest."""
        found = structural(
            minimal(
                steps=[
                    {"id": "a", "channel": "sms_cod", "timeot": "5s"},
                    {"id": "b", "channel": "phone_call", "after": ["z"]},
                ]
            ),
            source="p.toml",
        )
        assert [path for path, _ in found] == [
            "steps[0].timeot",
            "steps[0].channel",
            "steps[1].after[0]",
        ]

    def test_unreadable_structure_reports_only_structure(self) -> None:
        """Without name, version and steps, only the structural problems are listed."""
        assert structural({"name": "x", "version": "1"}) == [
            ("steps", "missing required key")
        ]

    def test_step_missing_keys(self) -> None:
        """A step needs an id and a channel."""
        assert structural(minimal(steps=[{}, {"id": "b"}])) == [
            ("steps[0].channel", "missing required key"),
            ("steps[0].id", "missing required key"),
            ("steps[1].channel", "missing required key"),
        ]

    @pytest.mark.parametrize(
        ("rule", "path", "message"),
        [
            (
                {"when": "true", "reason": "r"},
                "rules[0].outcome",
                "missing required key",
            ),
            (
                {"outcome": "rejectd", "when": "true", "reason": "r"},
                "rules[0].outcome",
                "'rejectd' is not an outcome (one of approved, expired, rejected, review)",
            ),
            (
                {"outcome": "rejected", "when": 1, "reason": "r"},
                "rules[0].when",
                "expected a string, got an integer",
            ),
            (
                {"outcome": "rejected", "when": "true", "reason": ["r"]},
                "rules[0].reason",
                "expected a string, got a list",
            ),
            (
                {"outcome": "rejected", "when": "true", "reason": "r", "message": 1},
                "rules[0].message",
                "expected a string, got an integer",
            ),
            (
                {"outcome": "rejected", "when": "true", "reason": "r", "note": ""},
                "rules[0].note",
                "unknown key; known keys: message, outcome, reason, when",
            ),
        ],
    )
    def test_rule_problems(self, rule: dict[str, Any], path: str, message: str) -> None:
        """Each rule setting is checked and located."""
        assert structural(minimal(rules=[rule])) == [(path, message)]

    def test_every_problem_is_collected(self) -> None:
        """All structural problems are reported together, in document order."""
        document = {
            "name": "loan",
            "version": "1",
            "deadline": "x",
            "steps": [
                {"id": "a", "channel": "sms_code"},
                {"id": "b", "channel": "sms_code", "timeout": "y"},
                {"id": "c", "channel": "sms_code", "retry": {"attempts": "3"}},
            ],
            "rules": [{"outcome": "nope", "when": "true", "reason": "r"}],
        }
        assert [path for path, _ in structural(document)] == [
            "deadline",
            "steps[1].timeout",
            "steps[2].retry.attempts",
            "rules[0].outcome",
        ]

    def test_channels(self) -> None:
        """Registered channels reach the policy."""
        spec = ChannelSpec(name="fax")
        policy = policy_from_dict(step(channel="fax"), channels={"fax": spec})
        assert policy.channels == {"fax": spec}


def parse_document(text: str) -> dict[str, Any]:
    """A TOML text as a plain document."""
    import tomllib

    return tomllib.loads(text)


class TestSemanticMistakesInFiles:
    def test_timing_reason_and_type_mistakes_are_located_in_the_file(
        self, tmp_path: Path
    ) -> None:
        """A file's zero timeout, backwards backoff, prose reason and mixed types are
        each reported with the file and the place."""
        path = tmp_path / "policy.toml"
        path.write_text(
            'name = "p"\nversion = "1"\ndeadline = "0s"\n'
            '[[steps]]\nid = "bureau"\nchannel = "credit_bureau"\ntimeout = "0s"\n'
            'retry = { wait_initial = "3s", wait_max = "1s" }\n'
            '[[rules]]\noutcome = "approved"\n'
            'when = "steps.bureau.score > \'good\'"\nreason = "Looks good"\n'
        )
        with pytest.raises(PolicyError) as info:
            load_policy(path)
        assert {(p.source, p.path) for p in info.value.problems} == {
            (str(path), "deadline"),
            (str(path), "steps[0].timeout"),
            (str(path), "steps[0].retry.wait_initial"),
            (str(path), "rules[0].reason"),
            (str(path), "rules[0].when"),
        }


class TestPrice:
    def test_price_loads(self) -> None:
        """``price`` reads integers and numbers as a float and round-trips."""
        text = (
            'name = "p"\nversion = "1"\n'
            '[[steps]]\nid = "a"\nchannel = "sms_code"\nprice = 2\n'
            '[[steps]]\nid = "b"\nchannel = "credit_bureau"\nprice = 0.35\n'
        )
        policy = parse_policy(text, format="toml")
        assert [step.price for step in policy.steps] == [2.0, 0.35]
        assert policy_from_dict(policy.to_dict()).hash == policy.hash

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ('"0.05"', "expected a number, got a string"),
            ("true", "expected a number, got a boolean"),
            ("-0.5", "must be a number of at least 0, got -0.5"),
            ("nan", "must be a number of at least 0, got nan"),
            ("inf", "must be a number of at least 0, got inf"),
        ],
    )
    def test_bad_price_is_located(self, value: str, message: str) -> None:
        """A wrong price names its step and the file."""
        text = (
            'name = "p"\nversion = "1"\n'
            '[[steps]]\nid = "a"\nchannel = "sms_code"\n'
            f'[[steps]]\nid = "b"\nchannel = "credit_bureau"\nprice = {value}\n'
        )
        with pytest.raises(PolicyError) as info:
            parse_policy(text, format="toml", source="new.toml")
        assert [(p.source, p.path, p.message) for p in info.value.problems] == [
            ("new.toml", "steps[1].price", message)
        ]
