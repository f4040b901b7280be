"""Tests for CEL conditions (a private module, reached here directly)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

import multiverify
from multiverify import ChannelSpec, Outcome, Policy, Rule, Step, Verifier
from multiverify.policy._cel import ConditionError, compile_condition, make_context
from multiverify.sandbox import get_persona
from multiverify.testing import Scripted, ScriptedChannel


class TestCompileCondition:
    def test_empty_expression(self) -> None:
        """A blank expression is refused before it reaches the parser."""
        with pytest.raises(ConditionError, match="empty expression"):
            compile_condition("   ")

    def test_syntax_error_keeps_the_column_marker(self) -> None:
        """A parse error keeps the parser's location, without its preamble."""
        with pytest.raises(ConditionError) as info:
            compile_condition("1 +")
        message = str(info.value)
        assert message.startswith("<input>:1:4: Syntax error")
        assert "Failed to parse" not in message

    def test_variables_exclude_macro_bound_names(self) -> None:
        """Names bound by a macro are not free variables."""
        condition = compile_condition(
            "steps.call.signals.exists(s, s == 'hesitant') && applicant.age > 18"
        )
        assert condition.variables == frozenset({"steps", "applicant"})
        assert not condition.constant

    def test_chains_ignore_string_literals(self) -> None:
        """Dotted paths inside strings are not references."""
        condition = compile_condition(
            "application.amount > 1 && 'steps.ghost.status' != steps . bureau . status"
        )
        assert condition.chains == (
            ("application", "amount"),
            ("steps", "bureau", "status"),
        )
        assert condition.steps == frozenset({"bureau"})

    def test_status_literals_on_either_side(self) -> None:
        """A status literal is found left or right of the comparison."""
        condition = compile_condition(
            "steps.a.status == 'passed' || \"failed\" != steps.b.status"
        )
        assert condition.status_literals == (("a", "passed"), ("b", "failed"))

    def test_signal_literals(self) -> None:
        """``'x' in steps.s.signals`` records the step and the signal."""
        condition = compile_condition(
            "'fraud_alert' in steps.bureau.signals || \"busy\" in steps.call.signals"
        )
        assert condition.signal_literals == (
            ("bureau", "fraud_alert"),
            ("call", "busy"),
        )

    def test_constant(self) -> None:
        """An expression without variables is constant."""
        assert compile_condition("1 < 2").constant


class TestEvaluate:
    def test_boolean(self) -> None:
        """A boolean expression evaluates against the context."""
        condition = compile_condition("application.amount > 2000")
        assert condition.evaluate({"application": {"amount": 2500}})
        assert not condition.evaluate({"application": {"amount": 100}})

    def test_not_a_boolean(self) -> None:
        """A non-boolean result is an error."""
        with pytest.raises(ConditionError, match="expected a boolean, got int"):
            compile_condition("1 + 2").evaluate({})

    def test_failure_is_wrapped(self) -> None:
        """An evaluation failure becomes a ConditionError naming its type."""
        with pytest.raises(ConditionError, match="RuntimeError"):
            compile_condition("application.amount > 1").evaluate({})

    def test_number(self) -> None:
        """A numeric expression evaluates to a float."""
        condition = compile_condition("steps.a.score * 2.0")
        assert condition.evaluate_number({"steps": {"a": {"score": 0.25}}}) == 0.5
        assert compile_condition("3").evaluate_number({}) == 3.0

    def test_number_rejects_booleans(self) -> None:
        """A boolean is not a number here."""
        with pytest.raises(ConditionError, match="expected a number, got bool"):
            compile_condition("true").evaluate_number({})

    def test_number_rejects_strings(self) -> None:
        """A string is not a number."""
        with pytest.raises(ConditionError, match="expected a number, got str"):
            compile_condition("'x'").evaluate_number({})

    def test_number_failure_is_wrapped(self) -> None:
        """An evaluation failure becomes a ConditionError."""
        with pytest.raises(ConditionError, match="ZeroDivisionError"):
            compile_condition("1 / 0").evaluate_number({})


class TestMakeContext:
    @pytest.mark.parametrize("value", [date(2026, 1, 1), {1, 2}, object()])
    def test_a_value_cel_cannot_hold_is_a_condition_error(self, value: object) -> None:
        """A fact CEL has no type for fails like an evaluation, not as a ValueError."""
        with pytest.raises(ConditionError, match=r"ValueError: .*convert"):
            make_context({"steps": {"a": {"facts": {"when": value}}}})

    async def test_a_session_with_such_a_fact_is_still_decided(self) -> None:
        """A channel reporting a date among its facts leaves the rule unmatched, no hang."""
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="a", channel="x")],
            rules=[
                Rule(outcome="approved", when="steps.a.facts.band == 'A'", reason="ok")
            ],
            channels={"x": ChannelSpec(name="x")},
        )
        facts = {"band": "A", "reported_on": date(2026, 1, 1)}
        channel = ScriptedChannel("x", [Scripted.ends("passed", facts=facts)])
        async with Verifier(policy, channels=[channel]) as verifier:
            verdict = await asyncio.wait_for(
                verifier.run(get_persona("honest").applicant), timeout=30
            )
        assert verdict.outcome is Outcome.REVIEW
        [trace] = verdict.rules
        assert trace.matched is False
        assert "convert" in trace.error


_ENGINE_ALONE = """
print("cel" in sys.modules, "typer" in sys.modules, "asyncio" in sys.modules)
import cel
print(cel.compile is _cel.compile_condition.__globals__["_ENGINE"].compile)
print(_cel.compile_condition("1 < 2").evaluate({}))
"""


class TestEngine:
    def test_the_engine_loads_without_the_packages_command_line_tool(self) -> None:
        """Conditions use the native engine alone; ``import cel`` later reuses it.

        The ``cel`` package's ``__init__`` imports its command-line tool (typer,
        rich, prompt_toolkit, asyncio): the core loads none of it.
        """
        script = (
            "import importlib.util, sys, types, pathlib\n"
            "package = types.ModuleType('multiverify')\n"
            f"package.__path__ = [{str(Path(multiverify.__file__).parent)!r}]\n"
            "sys.modules['multiverify'] = package\n"
            "from multiverify.policy import _cel\n" + _ENGINE_ALONE
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        assert done.stdout.split("\n")[:3] == ["False False False", "True", "True"]

    def test_the_engine_is_loaded_once(self) -> None:
        """Loading the engine again returns the module already registered."""
        from multiverify.policy import _cel

        assert _cel._load_engine() is _cel._ENGINE
