"""What the core knows about a channel without importing it: name, signals, facts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .exceptions import PolicyProblem

__all__ = ["BUILTIN_CHANNELS", "ChannelSpec", "OptionsCheck"]

OptionsCheck = Callable[
    [Mapping[str, Any], Mapping[str, Mapping[str, Any]], str], "list[PolicyProblem]"
]
"""Checks a step's ``options``: ``(options, the policy's named scripts, path) -> problems``."""


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


@attrs.frozen(kw_only=True)
class ChannelSpec:
    """A channel's description, used to validate policies that name it.

    Attributes:
        name: the name policies use, such as ``sms_code``.
        signals: every signal the channel can emit; a rule testing another
            name can never fire. Empty means "not declared": nothing is checked.
        automatic: whether the channel finishes without the applicant (a
            bureau lookup) or waits for input or callbacks (an SMS code).
        description: one line for ``policy explain``.
        check_options: validates a step's ``options`` when the policy is
            built, so a mistake there is located like any other.
    """

    name: str
    signals: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    automatic: bool = False
    description: str = ""
    check_options: OptionsCheck | None = attrs.field(default=None, eq=False, repr=False)


def _phone_options(
    options: Mapping[str, Any], scripts: Mapping[str, Mapping[str, Any]], path: str
) -> list[PolicyProblem]:
    # Imported on use: policies without a phone step never load the script model.
    from ._call_script import phone_options_problems  # noqa: PLC0415

    return phone_options_problems(options, scripts, path)


_BUREAU_OPTIONS = ("purpose", "reuse_ttl", "min_score")


def bureau_options_problems(
    options: Mapping[str, Any], scripts: Mapping[str, Mapping[str, Any]], path: str
) -> list[PolicyProblem]:
    """Every located problem of a credit-bureau step's options (empty when sound)."""
    del scripts
    from ._duration import parse_duration  # noqa: PLC0415 - a leaf module, loaded on use

    problems: list[PolicyProblem] = []

    def problem(key: str, message: str) -> None:
        problems.append(PolicyProblem(path=f"{path}.{key}", message=message))

    for key in options:
        if key not in _BUREAU_OPTIONS:
            problem(key, f"unknown option (known: {', '.join(_BUREAU_OPTIONS)})")
    purpose = options.get("purpose")
    if "purpose" in options and (not isinstance(purpose, str) or not purpose.strip()):
        problem("purpose", f"must be a non-empty string, got {purpose!r}")
    if "reuse_ttl" in options:
        try:
            parse_duration(options["reuse_ttl"])  # refuses negative durations too
        except ValueError as exc:
            problem("reuse_ttl", str(exc))
    score = options.get("min_score")
    if "min_score" in options and (
        isinstance(score, bool) or not isinstance(score, int)
    ):
        problem("min_score", f"must be a whole number, got {score!r}")
    return problems


BUILTIN_CHANNELS: dict[str, ChannelSpec] = {
    spec.name: spec
    for spec in (
        ChannelSpec(
            name="credit_bureau",
            automatic=True,
            description="credit-bureau lookup: identity match, fraud alerts, inquiries",
            check_options=bureau_options_problems,
            signals={
                "identity_match",
                "identity_mismatch",
                "fraud_alert",
                "security_freeze",
                "thin_file",
                "no_hit",
                "many_recent_inquiries",
                "delinquent",
                "blacklist_hit",
            },
        ),
        ChannelSpec(
            name="sms_code",
            description="one-time code sent by SMS and typed into the app",
            signals={
                "code_verified",
                "wrong_code",
                "attempts_exhausted",
                "code_expired",
                "undelivered",
                "invalid_number",
            },
        ),
        ChannelSpec(
            name="phone_call",
            description="confirmation call: identity, loan intent, details, risk signs",
            check_options=_phone_options,
            signals={
                "identity_confirmed",
                "identity_mismatch",
                "intent_confirmed",
                "intent_declined",
                "details_completed",
                "evasive_answer",
                "hesitant",
                "third_party_present",
                "coached",
                "inconsistent",
                "answering_machine",
                "no_answer",
                "busy",
                "refused",
                "wrong_person",
                "call_back_later",
                "detail_mismatch",
                "invalid_input",
                "hung_up",
                "no_contact",
                "outside_calling_window",
            },
        ),
        ChannelSpec(
            name="video_sign",
            description="video signing: liveness, face match, spoken confirmation",
            signals={
                "liveness_passed",
                "liveness_failed",
                "face_match",
                "face_mismatch",
                "statement_confirmed",
                "resubmission_requested",
                "abandoned",
                "document_invalid",
                "document_holder_match",
                "document_holder_mismatch",
                "document_holder_unknown",
            },
        ),
    )
}
