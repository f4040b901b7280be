"""Built-in channel specs: names, signals and what policies may test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from multiverify import ChannelSpec, Policy, Rule, Step
from multiverify.channels import ChannelRegistry
from multiverify.exceptions import PolicyError


class TestChannelSpec:
    def test_signals_become_a_frozenset(self) -> None:
        """Signals given as any iterable are stored as a frozenset."""
        spec = ChannelSpec(name="kyc", signals=["a", "b", "a"])
        assert spec.signals == frozenset({"a", "b"})

    def test_builtin_channels(self) -> None:
        """The four built-in channels are known, with the signals policies test."""
        specs = ChannelRegistry.builtin_specs()
        assert set(specs) == {"credit_bureau", "sms_code", "phone_call", "video_sign"}
        assert specs["credit_bureau"].automatic
        assert not specs["sms_code"].automatic
        assert "fraud_alert" in specs["credit_bureau"].signals
        assert {"hesitant", "evasive_answer", "no_answer"} <= specs[
            "phone_call"
        ].signals
        assert {"liveness_passed", "face_match"} <= specs["video_sign"].signals
        assert "code_verified" in specs["sms_code"].signals
        assert all(spec.description for spec in specs.values())

    def test_specs_serialise_in_a_fresh_interpreter(self) -> None:
        """A spec's type hints resolve without anything else imported first.

        Runtimes that ship specs to another process (Temporal) unstructure
        them; a hint only known to the type checker broke that.
        """
        code = (
            "from multiverify._serde import unstructure\n"
            "from multiverify._specs import BUILTIN_CHANNELS\n"
            "print(unstructure(BUILTIN_CHANNELS['sms_code'])['name'])\n"
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sms_code"

    def test_a_custom_spec_declares_its_signals(self) -> None:
        """A user channel's declared signals are checked in rules like built-in ones."""
        spec = ChannelSpec(name="kyc", signals={"document_ok"})
        with pytest.raises(PolicyError, match="never emits signal 'documnet_ok'"):
            Policy(
                name="p",
                version="1",
                steps=[Step(id="kyc", channel="kyc")],
                rules=[
                    Rule(
                        outcome="approved",
                        when="'documnet_ok' in steps.kyc.signals",
                        reason="ok",
                    )
                ],
                channels={"kyc": spec},
            )

    def test_undeclared_signals_are_not_checked(self) -> None:
        """A spec without signals accepts any signal name in rules."""
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="kyc", channel="kyc")],
            rules=[
                Rule(outcome="approved", when="'x' in steps.kyc.signals", reason="ok")
            ],
            channels={"kyc": ChannelSpec(name="kyc")},
        )
        assert policy.rules[0].when == "'x' in steps.kyc.signals"

    def test_video_sign_declares_the_holder_signals(self) -> None:
        """Rules on the document holder's signals and facts build; a misspelt signal is refused."""

        def video_policy(*conditions: str) -> Policy:
            return Policy(
                name="p",
                version="1",
                steps=[Step(id="video", channel="video_sign")],
                rules=[
                    Rule(outcome="review", when=when, reason="video.holder")
                    for when in conditions
                ],
            )

        policy = video_policy(
            "'document_holder_mismatch' in steps.video.signals",
            "steps.video.facts.document_holder == 'unknown'",
            "'document_holder_match' in steps.video.signals",
        )
        assert len(policy.rules) == 3
        with pytest.raises(PolicyError, match="never emits signal 'holder_mismatch'"):
            video_policy("'holder_mismatch' in steps.video.signals")
