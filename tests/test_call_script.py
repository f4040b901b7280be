"""Tests for call scripts and phone-call options: policy loading, located problems, rendering."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from multiverify import Applicant, RepaymentSchedule
from multiverify._call_script import render, render_values, schedule_text
from multiverify.channels import (
    CallScript,
    Prompt,
    PromptKind,
    phone_options,
    script_problems,
)
from multiverify.exceptions import PolicyError
from multiverify.policy import load_policy, parse_policy
from multiverify.sandbox import get_persona

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


def _applicant_with_schedule() -> Applicant:
    """The honest persona's applicant, with fees and a repayment schedule."""
    applicant = get_persona("honest").applicant
    loan = attrs.evolve(
        applicant.loan,
        fees=Decimal("120.5"),
        repayment=RepaymentSchedule(
            installments=12,
            installment_amount=Decimal("716.67"),
            first_due=date(2026, 2, 5),
        ),
    )
    return attrs.evolve(applicant, loan=loan)


class TestRendering:
    @pytest.mark.parametrize(
        ("locale", "expected"),
        [
            (
                "zh-CN",
                (
                    "您申请的借款金额为¥8,000.00，期限12个月，手续费¥120.50。"
                    "确认申请请按1，否认请按2。"
                ),
            ),
            (
                "en",
                (
                    "You applied to borrow CN¥8,000.00 over 12 months, with fees of "
                    "CN¥120.50. To confirm press 1; if you did not apply press 2."
                ),
            ),
        ],
    )
    def test_loan_terms(self, locale: str, expected: str) -> None:
        """The intent prompt reads amount, term and fees formatted per locale (Babel, CLDR)."""
        script = CallScript.default()
        applicant = _applicant_with_schedule()
        assert (
            render(script, script.prompt("loan_terms"), applicant, locale) == expected
        )

    @pytest.mark.parametrize(
        ("locale", "installment", "first_due", "rate", "brand"),
        [
            ("zh-CN", "¥716.67", "2026年2月5日", "10.8%", "贷款机构"),
            ("en", "CN¥716.67", "February 5, 2026", "10.8%", "your lender"),
        ],
    )
    def test_repayment_values(
        self, locale: str, installment: str, first_due: str, rate: str, brand: str
    ) -> None:
        """Instalment amounts, due dates and rates follow the locale; a missing brand has a default."""
        script = CallScript.default()
        values = render_values(
            script, script.prompt("loan_terms"), _applicant_with_schedule(), locale
        )
        assert values["installment_amount"] == installment
        assert values["first_due"] == first_due
        assert values["annual_rate"] == rate
        assert values["installments"] == "12"
        assert values["brand"] == brand

    def test_masked_names_for_agents(self) -> None:
        """The agent's copy of a template masks the applicant's name."""
        script = CallScript(
            name="s",
            prompts=[
                Prompt(
                    id="hi",
                    kind=PromptKind.DISCLOSURE,
                    text={"zh-CN": "{name}您好", "en": "Hello {name}"},
                )
            ],
        )
        applicant = get_persona("honest").applicant
        prompt = script.prompt("hi")
        assert render(script, prompt, applicant, "en") == "Hello Wang Fang"
        assert render(script, prompt, applicant, "en", masked=True) == "Hello W*** F***"

    def test_missing_locale_falls_back(self) -> None:
        """A prompt without the locale's text is read in the script's default locale."""
        script = CallScript(
            name="s",
            default_locale="en",
            prompts=[Prompt(id="hi", kind=PromptKind.DISCLOSURE, text={"en": "Hello"})],
        )
        applicant = get_persona("honest").applicant
        assert script.locale_for("zh-CN") == "en"
        assert render(script, script.prompt("hi"), applicant, "zh-CN") == "Hello"


BAD_YAML = """\
name: p
version: "1"
steps:
  - id: call
    channel: phone_call
    options:
      script: confirm
      recording_wait: soon
scripts:
  confirm:
    recording: true
    prompts:
      - id: notice
        kind: disclosure
        text: {zh-CN: "您好", en: "Hello"}
        colour: red
      - id: year
        kind: identity
        text: {zh-CN: "请确认", en: "Please confirm"}
        expect: {kind: yes_no}
      - id: year
        kind: intent
        text: {zh-CN: "借款{amount}，{when}", en: "Borrow {amount}"}
        expect: {kind: yes_no, yes_key: "#"}
        hesitation: slowly
        signal: grumpy
  spare:
    prompts:
      - id: x
        kind: risk
        text: {en: "Anyone else?"}
"""


class TestPolicyFiles:
    def test_every_mistake_located(self, tmp_path: Path) -> None:
        """A YAML policy's script mistakes are all reported, each at its place, with the file."""
        path = tmp_path / "policy.yaml"
        path.write_text(BAD_YAML, encoding="utf-8")
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        problems = {(p.path, p.source) for p in caught.value.problems}
        paths = {p for p, _ in problems}
        assert {source for _, source in problems} == {str(path)}
        assert {
            "steps[0].options.recording_wait",
            "scripts.confirm.prompts[0].colour",
            "scripts.confirm.prompts[2].hesitation",
        } <= paths
        # Shape problems are found first; fixing them brings out the rules.
        fixed = (
            BAD_YAML.replace("        colour: red\n", "")
            .replace("        hesitation: slowly\n", "")
            .replace("      recording_wait: soon\n", "")
        )
        path.write_text(fixed, encoding="utf-8")
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        messages = {p.path: p.message for p in caught.value.problems}
        assert "recording_notice" in messages["scripts.confirm.prompts[0]"]
        assert "digits or speech" in messages["scripts.confirm.prompts[1].expect.kind"]
        assert "duplicate" in messages["scripts.confirm.prompts[2].id"]
        assert "{when}" in messages["scripts.confirm.prompts[2].text.zh-CN"]
        assert "one key" in messages["scripts.confirm.prompts[2].expect.yes_key"]
        assert "grumpy" in messages["scripts.confirm.prompts[2].signal"]
        # A script no step uses is checked too.
        assert "zh-CN" in messages["scripts.spare.prompts[0].text"]
        assert "needs an answer" in messages["scripts.spare.prompts[0].expect.kind"]

    def test_json_policy_with_inline_script(self, tmp_path: Path) -> None:
        """A JSON policy may write the script in the step's options; it loads and reads back."""
        path = tmp_path / "policy.json"
        path.write_text(
            json.dumps(
                {
                    "name": "p",
                    "version": "1",
                    "steps": [
                        {
                            "id": "call",
                            "channel": "phone_call",
                            "options": {
                                "recording": False,
                                "recording_wait": "2m",
                                "script": {
                                    "prompts": [
                                        {
                                            "id": "year",
                                            "kind": "identity",
                                            "text": {"zh-CN": "请输入出生年份。"},
                                            "expect": {
                                                "kind": "digits",
                                                "length": 4,
                                                "source": "birth_year",
                                            },
                                        }
                                    ]
                                },
                            },
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )
        options = phone_options(load_policy(path).step("call").options)
        assert options.recording_wait == 120.0
        assert not options.script.recording
        assert options.script.prompt("year").expect.source == "birth_year"

    def test_turning_recording_on_needs_a_notice(self) -> None:
        """recording = true on a script without a notice is located under the step's script."""
        from multiverify.policy import Policy, Step

        with pytest.raises(PolicyError) as caught:
            Policy(
                name="p",
                version="1",
                steps=[
                    Step(
                        id="call",
                        channel="phone_call",
                        options={
                            "recording": True,
                            "script": {
                                "prompts": [
                                    {
                                        "id": "hi",
                                        "kind": "disclosure",
                                        "text": {"zh-CN": "您好"},
                                    }
                                ]
                            },
                        },
                    )
                ],
            )
        assert [p.path for p in caught.value.problems] == [
            "steps[0].options.script.prompts[0]"
        ]


class TestOptions:
    def test_window_schedule_and_limits(self) -> None:
        """The calling window, attempt schedule and limits are read from the step's options."""
        options = phone_options(
            {
                "calling_window": {
                    "start": "09:30",
                    "end": "24:00",
                    "weekdays": ["Mon", "tuesday", "fri"],
                    "blocked_dates": ["2026-10-01", date(2026, 10, 2)],
                },
                "retry_schedule": ["15m", 3600, "next day 10:00"],
                "max_attempts": 5,
                "max_per_day": 2,
                "zone": "phone",
                "ring_timeout": "45s",
                "time_limit": "5m",
                "machine_detection": False,
                "language": "en",
                "brand": "Acme",
            }
        )
        window = options.calling_window
        assert window.describe() == "09:30-24:00 mon,tue,fri, 2 blocked dates"
        assert schedule_text(options.schedule) == "15m, 1h, next day 10:00"
        assert (options.schedule.max_attempts, options.schedule.max_per_day) == (5, 2)
        assert options.zone == "phone"
        assert (options.ring_timeout, options.time_limit) == (45.0, 300.0)
        assert options.machine_detection is False
        assert options.language == "en"
        assert options.script.brand == "Acme"

    @pytest.mark.parametrize(
        ("options", "path"),
        [
            ({"calling_window": "8-21"}, "options.calling_window"),
            ({"calling_window": {"start": "8am"}}, "options.calling_window.start"),
            ({"calling_window": {"end": "25:00"}}, "options.calling_window.end"),
            (
                {"calling_window": {"weekdays": ["someday"]}},
                "options.calling_window.weekdays",
            ),
            ({"calling_window": {"weekdays": []}}, "options.calling_window.weekdays"),
            (
                {"calling_window": {"blocked_dates": ["1 Oct"]}},
                "options.calling_window.blocked_dates[0]",
            ),
            (
                {"calling_window": {"blocked_dates": "2026-10-01"}},
                "options.calling_window.blocked_dates",
            ),
            ({"retry_schedule": "30m"}, "options.retry_schedule"),
            (
                {"retry_schedule": ["30m", "next day 25:00"]},
                "options.retry_schedule[1]",
            ),
            ({"max_per_day": True}, "options.max_per_day"),
            ({"ring_timeout": "forever"}, "options.ring_timeout"),
            ({"machine_detection": "yes"}, "options.machine_detection"),
            ({"recording": "on"}, "options.recording"),
            ({"brand": 7}, "options.brand"),
            ({"language": ["en"]}, "options.language"),
        ],
    )
    def test_mistakes_are_located(self, options: dict[str, object], path: str) -> None:
        """Each mistake in the options names its place."""
        with pytest.raises(PolicyError) as caught:
            phone_options(options)
        assert path in [p.path for p in caught.value.problems]

    def test_mismatch_defaults(self) -> None:
        """A disclosure calls back, identity and intent fail, details and risk are flagged."""
        script = CallScript.default()
        actions = {
            p.id: (p.mismatch_action.value, p.mismatch_signal) for p in script.prompts
        }
        assert actions == {
            "recording": ("call_back", "call_back_later"),
            "id_last4": ("fail", "identity_mismatch"),
            "birth_year": ("fail", "identity_mismatch"),
            "loan_terms": ("fail", "intent_declined"),
            "purpose": ("flag", "detail_mismatch"),
            "third_party": ("flag", "coached"),
        }


def _identity(**changes: object) -> dict[str, object]:
    """A sound identity prompt, changed."""
    prompt: dict[str, object] = {
        "id": "year",
        "kind": "identity",
        "text": {"zh-CN": "请输入出生年份。"},
        "expect": {"kind": "digits", "length": 4, "source": "birth_year"},
    }
    prompt.update(changes)
    return prompt


class TestScriptTables:
    def test_a_sound_table(self) -> None:
        """A sound script table has no problems; speech keywords per locale are read."""
        table = {
            "brand": "Acme",
            "closing": {"zh-CN": "再见。"},
            "prompts": [
                _identity(),
                {
                    "id": "purpose",
                    "kind": "detail",
                    "text": {"zh-CN": "借款用途？"},
                    "expect": {
                        "kind": "speech",
                        "keywords": {"zh-CN": ["装修", "买车"]},
                    },
                    "weight": 2,
                    "reprompts": 0,
                    "hesitation": "5s",
                },
            ],
        }
        assert script_problems(table, "script") == []

    @pytest.mark.parametrize(
        ("table", "path", "words"),
        [
            ({}, "script.prompts", "missing"),
            ({"prompts": []}, "script.prompts", "at least one"),
            ({"prompts": ["year"]}, "script.prompts[0]", "table"),
            ({"prompts": [_identity(id=None)]}, "script.prompts[0].id", "string"),
            ({"prompts": [{"kind": "identity"}]}, "script.prompts[0].id", "missing"),
            ({"prompts": [_identity(kind="quiz")]}, "script.prompts[0].kind", "quiz"),
            ({"prompts": [_identity(text={})]}, "script.prompts[0].text", "one locale"),
            (
                {"prompts": [_identity(text={"en": 5})]},
                "script.prompts[0].text.en",
                "string",
            ),
            ({"prompts": [_identity(text="hi")]}, "script.prompts[0].text", "table"),
            (
                {"prompts": [_identity(expect={"kind": "digits", "length": 0})]},
                "script.prompts[0].expect.length",
                "at least 1",
            ),
            (
                {"prompts": [_identity(expect={"kind": "speech", "keywords": ["x"]})]},
                "script.prompts[0].expect.keywords",
                "table",
            ),
            (
                {
                    "prompts": [
                        _identity(expect={"kind": "speech", "keywords": {"en": "x"}})
                    ]
                },
                "script.prompts[0].expect.keywords.en",
                "list of words",
            ),
            (
                {"prompts": [_identity(expect={"kind": "morse"})]},
                "script.prompts[0].expect.kind",
                "morse",
            ),
            (
                {"prompts": [_identity(weight=-1)]},
                "script.prompts[0].weight",
                "negative",
            ),
            (
                {"prompts": [_identity(weight="heavy")]},
                "script.prompts[0].weight",
                "number",
            ),
            (
                {"prompts": [_identity(reprompts=-1)]},
                "script.prompts[0].reprompts",
                "at least 0",
            ),
            (
                {"prompts": [_identity(recording_notice="yes")]},
                "script.prompts[0].recording_notice",
                "true or false",
            ),
            (
                {"prompts": [_identity(timeout=0)]},
                "script.prompts[0].timeout",
                "positive",
            ),
            (
                {"prompts": [_identity(text={"zh-CN": "请输入{"})]},
                "script.prompts[0].text.zh-CN",
                "does not parse",
            ),
            (
                {"prompts": [_identity(recording_notice=True)]},
                "script.prompts[0].recording_notice",
                "only a disclosure",
            ),
            (
                {
                    "prompts": [
                        _identity(expect={"kind": "digits", "source": "shoe_size"})
                    ]
                },
                "script.prompts[0].expect.source",
                "shoe_size",
            ),
            (
                {"prompts": [_identity(expect={"kind": "digits", "length": 4})]},
                "script.prompts[0].expect.source",
                "must equal",
            ),
            (
                {"prompts": [_identity(expect={"kind": "speech", "source": "name"})]},
                "script.prompts[0].expect.source",
                "purpose",
            ),
            (
                {"prompts": [_identity(expect={"kind": "speech"})]},
                "script.prompts[0].expect.keywords",
                "keywords",
            ),
            (
                {
                    "prompts": [
                        _identity(
                            kind="intent", expect={"kind": "yes_no", "answer": "maybe"}
                        )
                    ]
                },
                "script.prompts[0].expect.answer",
                "'yes' or 'no'",
            ),
            (
                {
                    "prompts": [
                        _identity(
                            kind="intent",
                            expect={"kind": "yes_no", "yes_key": "1", "no_key": "1"},
                        )
                    ]
                },
                "script.prompts[0].expect.no_key",
                "different keys",
            ),
            ({"prompts": [_identity()], "brand": 7}, "script.brand", "string"),
            (
                {"prompts": [_identity()], "recording": "yes"},
                "script.recording",
                "true or false",
            ),
            ({"prompts": [_identity()], "closing": {}}, "script.closing", "one locale"),
            (
                {"prompts": [_identity()], "default_locale": "en"},
                "script.prompts[0].text",
                "default locale",
            ),
            ({"prompts": [_identity()], "voice": "x"}, "script.voice", "unknown key"),
        ],
    )
    def test_mistakes(self, table: dict[str, object], path: str, words: str) -> None:
        """Each mistake in a script table is reported at its place, in words that say what is wrong."""
        problems = {p.path: p.message for p in script_problems(table, "script")}
        assert path in problems, problems
        assert words in problems[path]
