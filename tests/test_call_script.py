"""Tests for call scripts and phone-call options: policy loading, located problems, rendering."""

from __future__ import annotations

import pytest

from multiverify.channels import CallScript, phone_options
from multiverify.exceptions import PolicyError
from multiverify.policy import parse_policy

POLICY = """
name = "p"
version = "1"
[[steps]]
id = "call"
channel = "phone_call"
[steps.options]
script = "confirm"
[scripts.confirm]
recording = true
[[scripts.confirm.prompts]]
id = "notice"
kind = "disclosure"
recording_notice = true
text = { zh-CN = "本次通话将被录音。", en = "This call is recorded." }
[[scripts.confirm.prompts]]
id = "year"
kind = "identity"
text = { zh-CN = "请输入出生年份。", en = "Enter your year of birth." }
expect = { kind = "digits", length = 4, source = "birth_year" }
"""


class TestCallScriptInPolicies:
    def test_named_script_section(self) -> None:
        """A step names a script of the policy's scripts section; the step resolves it."""
        policy = parse_policy(POLICY, format="toml")
        options = phone_options(policy.step("call").options)
        assert [p.id for p in options.script.prompts] == ["notice", "year"]
        assert policy.to_dict()["scripts"]["confirm"]["recording"] is True

    def test_recording_needs_a_notice_first(self) -> None:
        """A recorded script whose first prompt is no recording notice is located."""
        text = POLICY.replace("recording_notice = true", "")
        with pytest.raises(PolicyError) as caught:
            parse_policy(text, format="toml")
        assert [p.path for p in caught.value.problems] == ["scripts.confirm.prompts[0]"]

    def test_identity_prompts_never_read_personal_data(self) -> None:
        """An identity prompt reading {name} aloud is refused at its location."""
        text = POLICY.replace("请输入出生年份。", "{name}: 请输入出生年份。")
        with pytest.raises(PolicyError) as caught:
            parse_policy(text, format="toml")
        assert caught.value.problems[0].path == "scripts.confirm.prompts[1].text.zh-CN"
        assert "never reads personal data" in caught.value.problems[0].message

    @pytest.mark.parametrize(
        ("options", "path"),
        [
            ({"script": "nope"}, "steps[0].options.script"),
            (
                {"calling_window": {"start": "21:00", "end": "08:00"}},
                "steps[0].options.calling_window.end",
            ),
            ({"retry_schedule": ["soon"]}, "steps[0].options.retry_schedule[0]"),
            ({"max_attempts": 0}, "steps[0].options.max_attempts"),
            ({"zone": "moon"}, "steps[0].options.zone"),
            ({"colour": "red"}, "steps[0].options.colour"),
        ],
    )
    def test_bad_options_are_located(
        self, options: dict[str, object], path: str
    ) -> None:
        """Each mistake in a phone step's options names its place."""
        from multiverify.policy import Policy, Step

        with pytest.raises(PolicyError) as caught:
            Policy(
                name="p",
                version="1",
                steps=[Step(id="call", channel="phone_call", options=options)],
            )
        assert path in [p.path for p in caught.value.problems]


class TestDefaultScript:
    def test_locales(self) -> None:
        """The built-in script speaks zh-CN and en and falls back to the default."""
        script = CallScript.default()
        assert script.locale_for("en-GB") == "en"
        assert script.locale_for("fr") == "zh-CN"
        assert script.recording
        assert script.prompt("id_last4").expect.source == "national_id_last4"
        with pytest.raises(KeyError):
            script.prompt("nope")
