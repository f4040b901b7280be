"""Policies: steps, CEL conditions, decision rules; built in Python or loaded from files."""

from __future__ import annotations

from ._explain import explain_policy
from ._loader import load_policy, parse_policy, policy_from_dict
from ._model import Fallback, Policy, RetrySettings, Rule, Step
from ._review import ReviewSettings

__all__ = [
    "Fallback",
    "Policy",
    "RetrySettings",
    "ReviewSettings",
    "Rule",
    "Step",
    "explain_policy",
    "load_policy",
    "parse_policy",
    "policy_from_dict",
]
