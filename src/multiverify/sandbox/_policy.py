"""The demo policy shipped with the package."""

from __future__ import annotations

from pathlib import Path

from ..policy import Policy, load_policy

__all__ = ["DEFAULT_POLICY_PATH", "load_default_policy"]

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")
"""``default_policy.toml`` inside the installed package: the policy ``multiverify demo`` runs."""


def load_default_policy() -> Policy:
    """Load the shipped demo policy, ``consumer-loan-demo``.

    Raises:
        PolicyError: the file was edited into an invalid policy.
    """
    return load_policy(DEFAULT_POLICY_PATH)
